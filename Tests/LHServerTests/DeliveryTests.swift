import Foundation
import LHProto
import LHStore
import LHWireProto
import Logging
import NIOCore
import NIOEmbedded
import Testing

@testable import LHServer

/// Where a TaskRun attempt made ready by a report goes, and how the frames of
/// one group commit leave: the reporting worker first (within its room), and
/// each connection's frames together, in order.
@Suite struct DeliveryTests {
    func dispatcher() throws -> TaskDispatcher {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "lh-delivery-\(UUID().uuidString.prefix(8))")
        let store = try SQLiteStore(directory: dir)
        let processor = CommandProcessor(store: store, metadata: MetadataCache(), logger: Logger(label: "test"))
        return TaskDispatcher(starter: processor, logger: Logger(label: "test"))
    }

    /// A subscribed worker; its token (kept by the caller) names its connection.
    func subscribe(_ d: TaskDispatcher, _ name: String, taskDef: String = "step", capacity: Int = 4)
        -> LHConnectionToken
    {
        let token = LHConnectionToken()
        d.subscribe(
            connection: token.id, workerId: name, taskDef: taskDef, capacity: capacity,
            push: LHResponder(channel: EmbeddedChannel()))
        return token
    }

    @Test func theReportingWorkerGetsTheAttemptItsReportMadeReady() throws {
        let d = try dispatcher()
        let a = subscribe(d, "a")
        let b = subscribe(d, "b").id
        // In turn, a would be next; the report came from b.
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w1", guid: "g1", prefer: b)?.workerId == "b")
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w2", guid: "g1", prefer: b)?.workerId == "b")
        // Without a report the turn is unchanged.
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w3", guid: "g1")?.workerId == "a")
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w4", guid: "g1")?.workerId == "b")
        withExtendedLifetime(a) {}
    }

    @Test func aReportingWorkerWithoutRoomOrOfAnotherTaskDefGivesWayToTheTurn() throws {
        let d = try dispatcher()
        let a = subscribe(d, "a")
        let b = subscribe(d, "b", capacity: 1)
        let c = subscribe(d, "c", taskDef: "other")
        let (full, other) = (b.id, c.id)
        defer { withExtendedLifetime((a, b, c)) {} }
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w1", guid: "g1", prefer: full)?.workerId == "b")
        // b holds its one attempt: the next goes to a, whose turn it is.
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w2", guid: "g1", prefer: full)?.workerId == "a")
        // c does not take "step" at all.
        let r = d.reserveDirect(taskDef: "step", wfRunId: "w3", guid: "g1", prefer: other)
        #expect(r != nil && r?.workerId != "c")
    }

    @Test func framesOfAGroupLeaveWhenItEndsInOrderPerConnection() throws {
        let loop = EmbeddedEventLoop()
        let one = EmbeddedChannel(loop: loop)
        let two = EmbeddedChannel(loop: loop)
        let frames = (1...3).map { i in Lhwire_Envelope(id: UInt64(i), .empty(.init())) }
        var insideOne: Lhwire_Envelope?
        LHResponder.grouping {
            LHResponder(channel: one).yield(frames[0])
            LHResponder(channel: two).yield(frames[1])
            LHResponder.grouping { LHResponder(channel: one).yield(frames[2]) }  // nested: joins the outer group
            insideOne = try? one.readOutbound(as: Lhwire_Envelope.self)
        }
        #expect(insideOne == nil, "a frame left before its group ended")
        loop.run()
        #expect(try one.readOutbound(as: Lhwire_Envelope.self) == frames[0])
        #expect(try one.readOutbound(as: Lhwire_Envelope.self) == frames[2])
        #expect(try one.readOutbound(as: Lhwire_Envelope.self) == nil)
        #expect(try two.readOutbound(as: Lhwire_Envelope.self) == frames[1])
        // Outside a group a frame goes at once.
        LHResponder(channel: two).yield(frames[0])
        #expect(try two.readOutbound(as: Lhwire_Envelope.self) == frames[0])
        _ = try one.finish()
        _ = try two.finish()
    }

    /// A gRPC PollTask stream's room is its unanswered polls, not its
    /// reports: each reservation takes one, a release gives it back.
    @Test func aPollersRoomIsItsUnansweredPollsAndItTakesItsTurnWithOtherWorkers() throws {
        let d = try dispatcher()
        let poller = LHConnectionToken()
        let (_, continuation) = AsyncStream<Littlehorse_ScheduledTask>.makeStream()
        d.subscribePoller(connection: poller.id, workerId: "py", taskDef: "step", push: .stream(continuation))
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w0", guid: "g") == nil, "no poll yet, no room")
        d.addCredit(connection: poller.id)
        d.addCredit(connection: poller.id)
        let first = try #require(d.reserveDirect(taskDef: "step", wfRunId: "w1", guid: "g"))
        #expect(first.workerId == "py")
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w2", guid: "g")?.workerId == "py")
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w3", guid: "g") == nil, "both polls answered")
        d.release(first)
        #expect(
            d.reserveDirect(taskDef: "step", wfRunId: "w4", guid: "g")?.workerId == "py",
            "a released room is a poll again")
        // With a worker of our protocol beside it, they take turns.
        let wire = subscribe(d, "swift", capacity: 2)
        d.addCredit(connection: poller.id)
        let names = (5...7).compactMap { d.reserveDirect(taskDef: "step", wfRunId: "w\($0)", guid: "g")?.workerId }
        #expect(Set(names) == ["py", "swift"] && names.count == 3)
        d.disconnected(connection: poller.id)
        #expect(d.reserveDirect(taskDef: "step", wfRunId: "w8", guid: "g") == nil, "swift holds 2, the poller is gone")
        withExtendedLifetime((poller, wire)) {}
    }
}
