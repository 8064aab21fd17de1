import LHEngine
import LHProto
import Testing

@testable import LHServer

/// The group-commit pipeline's rules, move by move, with no threads.
@Suite struct PipelineStateTests {
    static func state(_ id: String, _ counter: Int64) -> WfRunState {
        var s = WfRunState(
            wfRun: .with {
                $0.id.id = id; $0.status = .running
            })
        s.variables[VariableKey(thread: 0, name: "counter")] = .with {
            $0.id.name = "counter"; $0.value.int = counter
        }
        return s
    }

    @Test func aBatchIsInFlightUntilItIsCommittedAndTheBuilderWaitsForRoom() {
        var p = PipelineState<String>(maxInFlight: 2)
        let r1 = p.park("early")
        #expect(p.hasRoom && !r1)
        let r2 = p.accept(batch: 1, builtOn: 0, states: [], deleted: [], orphans: [])
        #expect(r2)
        let r3 = p.accept(batch: 2, builtOn: 0, states: [], deleted: [], orphans: [])
        #expect(r3)
        #expect(!p.hasRoom && p.inFlight == 2)
        let r4 = p.park("builder")
        #expect(r4)
        let r5 = p.committed(batch: 1, states: [], deleted: [])
        #expect(r5 == "builder")
        #expect(p.hasRoom)
        // Resumed once only.
        let r6 = p.committed(batch: 2, states: [], deleted: [])
        #expect(r6 == nil)
        #expect(p.inFlight == 0)
    }

    @Test func laterBatchesBuildOnTheStatesBeingWrittenUntilTheyAreDurable() {
        var p = PipelineState<Never>(maxInFlight: 4)
        let r7 = p.accept(batch: 1, builtOn: 0, states: [("a", Self.state("a", 1))], deleted: ["gone"], orphans: [])
        #expect(r7)
        var base = p.base()
        #expect(base.overlay["a"]?.state?.variable("counter")?.int == 1)
        #expect(base.overlay.keys.contains("gone") && base.overlay["gone"]!.state == nil)
        // Batch 2 replaces a; batch 1 becoming durable must not drop batch 2's entry.
        let r8 = p.accept(batch: 2, builtOn: 0, states: [("a", Self.state("a", 2))], deleted: [], orphans: [])
        #expect(r8)
        _ = p.committed(batch: 1, states: [("a", Self.state("a", 1))], deleted: ["gone"])
        base = p.base()
        #expect(base.overlay["a"]?.state?.variable("counter")?.int == 2)
        #expect(base.overlay["gone"] == nil)
        _ = p.committed(batch: 2, states: [("a", Self.state("a", 2))], deleted: [])
        #expect(p.base().overlay.isEmpty)
    }

    @Test func aFailedCommitStartsANewEpochAndRefusesWhatWasBuiltOnIt() {
        var p = PipelineState<Never>(maxInFlight: 4)
        let first = p.accept(
            batch: 1, builtOn: 0, states: [("a", Self.state("a", 1))], deleted: [],
            orphans: [.with { $0.id.wfRunID.id = "later" }])
        #expect(first)
        #expect(p.base().orphans.count == 1)
        _ = p.failed(builtOn: 0)
        #expect(p.epoch == 1)
        #expect(p.base().overlay.isEmpty && p.base().orphans.isEmpty)
        // Built on epoch 0 while batch 1 was being written: refused, not in flight.
        let r9 = p.accept(batch: 2, builtOn: 0, states: [("a", Self.state("a", 2))], deleted: [], orphans: [])
        #expect(!r9)
        #expect(p.inFlight == 0 && p.base().overlay.isEmpty)
        // A second failure of the old epoch does not start yet another one.
        let r10 = p.accept(batch: 3, builtOn: 1, states: [], deleted: [], orphans: [])
        #expect(r10)
        let r11 = p.accept(batch: 4, builtOn: 1, states: [], deleted: [], orphans: [])
        #expect(r11)
        _ = p.failed(builtOn: 1)
        _ = p.failed(builtOn: 1)
        #expect(p.epoch == 2 && p.inFlight == 0)
    }
}
