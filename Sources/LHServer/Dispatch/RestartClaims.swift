import Foundation
import LHEngine
import LHStore
import Synchronization

/// TaskRun attempts that were in workers' hands when the server stopped.
///
/// A worker keeps running what it holds while the server is away, and when
/// it is back it subscribes again listing what it still holds (``claim``).
/// Without this, an attempt whose worker died with the server would wait
/// for its whole attempt timeout (60 s by default) before a retry. Here:
///
/// - its holder (same worker id, same TaskDef) subscribes again without
///   listing it: it is lost now (the worker says it does not have it);
/// - nobody claims it within the grace period after start-up: lost then;
/// - its holder polls over gRPC (LittleHorse's workers cannot list what
///   they hold): it is left to its attempt timeout, as before.
///
/// A lost attempt ends as TASK_TIMEOUT (``LHCommand/attemptLost``) and is
/// retried at once if it has retries left. Claims are trusted: a worker id
/// is a name, not a credential, and a false claim only leaves an attempt to
/// its timeout.
final class RestartClaims: Sendable {
    struct Attempt: Sendable, Hashable {
        var wfRunId: String
        var guid: String
        var attempt: Int32
        var workerId: String
        var taskDef: String
    }

    struct Holder: Hashable {
        var workerId: String
        var taskDef: String
    }

    private struct State {
        var open: [Holder: [String: Attempt]] = [:]  // key: "<wfRunId>/<guid>#<attempt>"
        var expired = false
        var count = 0
    }

    private let state: Mutex<State>
    let grace: Double
    /// How many attempts were in flight when the server took its partitions.
    var count: Int { state.withLock { $0.count } }

    init(_ attempts: [Attempt], grace: Double) {
        state = Mutex(State())
        self.grace = grace
        reset(attempts)
    }

    /// The attempts in flight when this server took its partitions (at
    /// start-up, or when a standby took over): the grace period counts from
    /// now.
    func reset(_ attempts: [Attempt]) {
        var s = State()
        for a in attempts {
            s.open[Holder(workerId: a.workerId, taskDef: a.taskDef), default: [:]][
                Self.key(a.wfRunId, a.guid, a.attempt)] =
                a
        }
        s.expired = attempts.isEmpty
        s.count = attempts.count
        state.withLock { $0 = s }
    }

    static func key(_ wfRunId: String, _ guid: String, _ attempt: Int32) -> String { "\(wfRunId)/\(guid)#\(attempt)" }

    /// Attempts of partitions taken from a member that died: open for
    /// claims too (its workers subscribe again when they hear the member
    /// is gone), until ``expire(_:)`` of the same list.
    func add(_ attempts: [Attempt]) {
        state.withLock { s in
            for a in attempts {
                s.open[Holder(workerId: a.workerId, taskDef: a.taskDef), default: [:]][
                    Self.key(a.wfRunId, a.guid, a.attempt)] = a
            }
            if !attempts.isEmpty { s.expired = false }
            s.count += attempts.count
        }
    }

    /// Of `attempts`, those nobody claimed: lost now.
    func expire(_ attempts: [Attempt]) -> [Attempt] {
        state.withLock { s in
            var lost: [Attempt] = []
            for a in attempts {
                let holder = Holder(workerId: a.workerId, taskDef: a.taskDef)
                if s.open[holder]?.removeValue(forKey: Self.key(a.wfRunId, a.guid, a.attempt)) != nil {
                    lost.append(a)
                }
                if s.open[holder]?.isEmpty == true { s.open[holder] = nil }
            }
            return lost
        }
    }

    /// The running attempts (TASK_RUNNING, with an attempt timeout pending)
    /// of a store just opened.
    static func inFlight(in store: any LHStorage, timers: [StoredTimer]) throws -> [Attempt] {
        var out: [Attempt] = []
        var states: [String: WfRunState?] = [:]
        for t in timers {
            guard case .attemptTimeout(let guid, let attempt) = t.key else { continue }
            if states[t.wfRunId] == nil { states[t.wfRunId] = .some(try store.wfRun(t.wfRunId)) }
            guard let state = states[t.wfRunId] ?? nil, let taskRun = state.taskRuns[guid],
                Int(attempt) == taskRun.attempts.count - 1, taskRun.attempts[Int(attempt)].status == .taskRunning
            else { continue }
            out.append(
                Attempt(
                    wfRunId: t.wfRunId, guid: guid, attempt: attempt,
                    workerId: taskRun.attempts[Int(attempt)].taskWorkerID, taskDef: taskRun.taskDefID.name))
        }
        return out
    }

    /// A worker of our protocol subscribed to `taskDef`, holding `held`
    /// (wfRunId, guid, attempt). Returns its attempts from before the
    /// restart that it did not list: lost.
    func claim(workerId: String, taskDef: String, held: [(String, String, Int32)]) -> [Attempt] {
        state.withLock { s in
            guard !s.expired else { return [] }
            let holder = Holder(workerId: workerId, taskDef: taskDef)
            let kept = Set(held.map { Self.key($0.0, $0.1, $0.2) })
            let mine = s.open.removeValue(forKey: holder) ?? [:]
            // Listed although recorded as another worker's: claimed too.
            for h in Array(s.open.keys) {
                for k in kept where s.open[h]?[k] != nil { s.open[h]![k] = nil }
                if s.open[h]?.isEmpty == true { s.open[h] = nil }
            }
            return mine.filter { !kept.contains($0.key) }.map(\.value)
        }
    }

    /// A gRPC worker polls: it cannot say what it holds, so its attempts are
    /// left to their timeouts.
    func pollerSeen(workerId: String, taskDef: String) {
        state.withLock { s in _ = s.open.removeValue(forKey: Holder(workerId: workerId, taskDef: taskDef)) }
    }

    /// Forgets the attempts of the WfRuns `picked` selects (their
    /// partitions went to another server).
    func drop(where picked: (String) -> Bool) {
        state.withLock { s in
            for h in Array(s.open.keys) {
                s.open[h] = s.open[h]!.filter { !picked($0.value.wfRunId) }
                if s.open[h]!.isEmpty { s.open[h] = nil }
            }
        }
    }

    /// The grace period is over: what nobody claimed is lost.
    func expire() -> [Attempt] {
        state.withLock { s in
            guard !s.expired else { return [] }
            s.expired = true
            defer { s.open = [:] }
            return s.open.values.flatMap(\.values)
        }
    }

    var isOpen: Bool { state.withLock { !$0.expired } }
}
