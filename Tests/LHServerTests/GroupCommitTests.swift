import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import Logging
import NIOConcurrencyHelpers
import Synchronization
import Testing

@testable import LHServer

/// The real SQLite store, whose commits can be made to fail: what a full
/// disk or an I/O error does to a group commit.
final class FailableStore: LHStorage, Sendable {
    let inner: SQLiteStore
    let failCommits = Mutex(false)
    /// Commits written, then reported failed: PostgreSQL's connection lost
    /// after the commit, before its answer (an ambiguous commit).
    let ambiguousCommits = Mutex(false)
    let commitDelay = Mutex(0.0)
    /// Transactions written and the group commits they held.
    let written = Mutex((transactions: 0, batches: 0))
    /// Transactions begun (counted before the delay).
    let begun = Mutex(0)
    /// When set, every transaction waits for it to be signalled.
    let gate = Mutex<DispatchSemaphore?>(nil)

    init(directory: URL) throws { inner = try SQLiteStore(directory: directory) }

    func commit(_ batches: [LHWriteBatch]) throws {
        begun.withLock { $0 += 1 }
        gate.withLock { $0 }?.wait()
        let delay = commitDelay.withLock { $0 }
        if delay > 0 { Thread.sleep(forTimeInterval: delay) }
        if failCommits.withLock({ $0 }) { throw StoreError("injected: disk full") }
        try inner.commit(batches)
        written.withLock {
            $0.transactions += 1; $0.batches += batches.count
        }
        if ambiguousCommits.withLock({ $0 }) { throw StoreError("injected: connection lost during the commit") }
    }

    func taskDefs() throws -> [Littlehorse_TaskDef] { try inner.taskDefs() }
    func externalEventDefs() throws -> [Littlehorse_ExternalEventDef] { try inner.externalEventDefs() }
    func wfSpecs() throws -> [Littlehorse_WfSpec] { try inner.wfSpecs() }
    func put(taskDef: Littlehorse_TaskDef) throws { try inner.put(taskDef: taskDef) }
    func put(externalEventDef: Littlehorse_ExternalEventDef) throws {
        try inner.put(externalEventDef: externalEventDef)
    }
    func put(wfSpec: Littlehorse_WfSpec) throws { try inner.put(wfSpec: wfSpec) }
    func wfRun(_ id: String) throws -> WfRunState? { try inner.wfRun(id) }
    func orphanEvents(of wfRunId: String) throws -> [Littlehorse_ExternalEvent] { try inner.orphanEvents(of: wfRunId) }
    func prepareWrites(of batch: inout LHWriteBatch) throws { try inner.prepareWrites(of: &batch) }
    func queuedTasks() throws -> [QueuedTask] { try inner.queuedTasks() }
    func timers() throws -> [StoredTimer] { try inner.timers() }
    func searchWfRuns(_ r: Littlehorse_SearchWfRunRequest) throws -> LHPage<String> { try inner.searchWfRuns(r) }
    func recentWfRuns(wfSpecName: String?, status: Littlehorse_LHStatus?, since: Date?, limit: Int) throws
        -> [String]
    {
        try inner.recentWfRuns(wfSpecName: wfSpecName, status: status, since: since, limit: limit)
    }
    func wfRunCounts() throws -> [Littlehorse_LHStatus: Int] { try inner.wfRunCounts() }
    func searchTaskRuns(_ r: Littlehorse_SearchTaskRunRequest) throws -> LHPage<Littlehorse_TaskRunId> {
        try inner.searchTaskRuns(r)
    }
    func searchVariables(_ r: Littlehorse_SearchVariableRequest) throws -> LHPage<Littlehorse_VariableId> {
        try inner.searchVariables(r)
    }
}

/// The command processor's group commit: a caller is answered only after
/// its transaction is durable, reads never see what is not, and when a
/// transaction fails, the batches built on its states fail with it.
@Suite struct GroupCommitTests {
    func processor() throws -> (CommandProcessor, FailableStore) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("lh-gc-\(UUID().uuidString.prefix(8))")
        let store = try FailableStore(directory: dir)
        return (CommandProcessor(store: store, metadata: MetadataCache(), logger: Logger(label: "test")), store)
    }

    /// A job that writes a WfRun with `counter` = old counter + 1 and returns the new value.
    @Sendable static func increment(_ id: String) -> @Sendable (inout Staging) throws -> Int64 {
        { s in
            var state =
                try s.state(id)
                ?? WfRunState(
                    wfRun: .with {
                        $0.id.id = id; $0.status = .running
                    })
            let next = (state.variable("counter")?.int ?? 0) + 1
            state.variables[VariableKey(thread: 0, name: "counter")] = .with {
                $0.id.name = "counter"; $0.value.int = next
            }
            s.save(id, state, [])
            return next
        }
    }

    @Test func aFailedCommitAnswersWithAnErrorAndLeavesNoTrace() async throws {
        let (processor, store) = try processor()
        #expect(try await processor.submit(key: "a", Self.increment("a")) == 1)
        store.failCommits.withLock { $0 = true }
        await #expect(throws: LHError.self) { try await processor.submit(key: "a", Self.increment("a")) }
        store.failCommits.withLock { $0 = false }
        // Neither a read nor the next command sees the refused change.
        #expect(try await processor.read("a")?.variable("counter")?.int == 1)
        #expect(try await processor.submit(key: "a", Self.increment("a")) == 2)
        #expect(try store.inner.wfRun("a")?.variable("counter")?.int == 2)
    }

    /// A commit the store may or may not hold (its connection lost during
    /// the call): refused to the caller, and the next read and command start
    /// from what the store holds, not from the state before the call.
    @Test func afterAnAmbiguousCommitTheWfRunIsReadFromTheStoreAgain() async throws {
        let (processor, store) = try processor()
        #expect(try await processor.submit(key: "c", Self.increment("c")) == 1)
        store.ambiguousCommits.withLock { $0 = true }
        await #expect(throws: LHError.self) { try await processor.submit(key: "c", Self.increment("c")) }
        store.ambiguousCommits.withLock { $0 = false }
        #expect(try store.inner.wfRun("c")?.variable("counter")?.int == 2, "the store holds the refused commit")
        #expect(try await processor.read("c")?.variable("counter")?.int == 2)
        #expect(try await processor.submit(key: "c", Self.increment("c")) == 3)
    }

    @Test func batchesBuiltOnAFailedCommitFailToo() async throws {
        let (processor, store) = try processor()
        #expect(try await processor.submit(key: "b", Self.increment("b")) == 1)
        // Slow, failing commits: later jobs run on top of the failing batch's states meanwhile.
        store.commitDelay.withLock { $0 = 0.2 }
        store.failCommits.withLock { $0 = true }
        let outcomes = NIOLockedValueBox<[Result<Int64, Error>]>([])
        await withTaskGroup(of: Void.self) { group in
            for i in 0..<6 {
                group.addTask {
                    try? await Task.sleep(for: .milliseconds(i * 40))
                    let r = await Result(catching: { try await processor.submit(key: "b", Self.increment("b")) })
                    outcomes.withLockedValue { $0.append(r) }
                }
            }
        }
        #expect(outcomes.withLockedValue { $0 }.allSatisfy { if case .failure = $0 { true } else { false } })
        store.failCommits.withLock { $0 = false }
        store.commitDelay.withLock { $0 = 0 }
        // Nothing of them is read or built on.
        #expect(try await processor.read("b")?.variable("counter")?.int == 1)
        #expect(try await processor.submit(key: "b", Self.increment("b")) == 2)
    }

    @Test func answersComeOnlyAfterTheTransactionIsDurable() async throws {
        let (processor, store) = try processor()
        store.commitDelay.withLock { $0 = 0.3 }
        let started = Date()
        #expect(try await processor.submit(key: "c", Self.increment("c")) == 1)
        #expect(Date().timeIntervalSince(started) >= 0.3)
        #expect(try store.inner.wfRun("c")?.variable("counter")?.int == 1)
        // Many jobs of one WfRun while commits are slow: applied in order, each once.
        let values = NIOLockedValueBox<[Int64]>([])
        await withTaskGroup(of: Void.self) { group in
            for _ in 0..<20 {
                group.addTask {
                    if let v = try? await processor.submit(key: "c", Self.increment("c")) {
                        values.withLockedValue { $0.append(v) }
                    }
                }
            }
        }
        #expect(values.withLockedValue { $0 }.sorted() == Array(2...21))
        #expect(try store.inner.wfRun("c")?.variable("counter")?.int == 21)
    }
}

extension GroupCommitTests {
    @Test func groupCommitsQueuedBehindASlowOneShareTheNextTransaction() async throws {
        let (_, store) = try processor()
        store.commitDelay.withLock { $0 = 0.3 }
        let line = CommitLine(store: store, metrics: LHMetrics())
        let order = Mutex<[String]>([])
        func entry(_ id: String, epoch: UInt64) -> CommitLine.Entry {
            var batch = LHWriteBatch()
            batch.wfRuns[id] = WfRunState(
                wfRun: .with {
                    $0.id.id = id; $0.status = .running
                })
            return .init(
                batch: batch, epoch: epoch, durable: { order.withLock { $0.append("durable \(id)") } },
                failed: { _ in order.withLock { $0.append("failed \(id)") } })
        }
        // Three group commits handed over while the first one's transaction
        // is being written: the two behind it share the next transaction.
        for id in ["a", "b", "c"] { line.append(entry(id, epoch: 0)) }
        while order.withLock({ $0.count }) < 3 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(order.withLock { $0 } == ["durable a", "durable b", "durable c"])
        let written = store.written.withLock { $0 }
        #expect(written.batches == 3 && written.transactions < 3, "\(written)")
        for id in ["a", "b", "c"] { #expect(try store.inner.wfRun(id) != nil) }
        // A failed transaction fails every group commit in it, and the ones
        // of its epoch handed over later are refused without being written.
        store.failCommits.withLock { $0 = true }
        line.append(entry("d", epoch: 0))
        line.append(entry("e", epoch: 0))
        while order.withLock({ $0.count }) < 5 { try await Task.sleep(for: .milliseconds(20)) }
        store.failCommits.withLock { $0 = false }
        line.append(entry("f", epoch: 0))
        line.append(entry("g", epoch: 1))
        while order.withLock({ $0.count }) < 7 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(order.withLock { Array($0.dropFirst(3)) } == ["failed d", "failed e", "failed f", "durable g"])
        #expect(try store.inner.wfRun("f") == nil)
        #expect(try store.inner.wfRun("g") != nil)
    }

    @Test func aSmallGroupCommitIsWrittenOnTheCallersThreadOnlyWhenNoneIsBeingWritten() async throws {
        let (_, store) = try processor()
        let line = CommitLine(store: store, metrics: LHMetrics())
        let order = Mutex<[String]>([])
        func entry(_ id: String) -> CommitLine.Entry {
            var batch = LHWriteBatch()
            batch.wfRuns[id] = WfRunState(
                wfRun: .with {
                    $0.id.id = id; $0.status = .running
                })
            return .init(
                batch: batch, epoch: 0, durable: { order.withLock { $0.append("durable \(id)") } },
                failed: { _ in order.withLock { $0.append("failed \(id)") } })
        }
        // Nothing being written: durable (answered) before append returns.
        line.append(here: true, entry("a"))
        #expect(order.withLock { $0 } == ["durable a"])
        #expect(try store.inner.wfRun("a") != nil)
        // One being written on the commit thread (held open by the gate): the
        // next waits for it there, in order, instead of being written here.
        let gate = DispatchSemaphore(value: 0)
        store.gate.withLock { $0 = gate }
        line.append(entry("b"))
        while store.begun.withLock({ $0 }) < 2 { try await Task.sleep(for: .milliseconds(5)) }
        line.append(here: true, entry("c"))
        #expect(order.withLock { $0 } == ["durable a"], "c was written while b's transaction was still open")
        gate.signal()
        gate.signal()
        while order.withLock({ $0.count }) < 3 { try await Task.sleep(for: .milliseconds(20)) }
        #expect(order.withLock { $0 } == ["durable a", "durable b", "durable c"])
    }
}

extension Result where Failure == Error {
    init(catching body: () async throws -> Success) async {
        do { self = .success(try await body()) } catch { self = .failure(error) }
    }
}
