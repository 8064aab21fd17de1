import Foundation
import LHProto
import LHStore
import LHWireProto
import SwiftProtobuf
import Testing

/// LHFastEncoding must write exactly what swift-protobuf writes, for every
/// kind of field our messages have: the stored form and the wire both use it.
@Suite struct FastEncodingTests {
    func expectSameBytes<M: Message & Equatable>(
        _ message: M, _ label: String = "", sourceLocation: SourceLocation = #_sourceLocation
    ) throws {
        let library: Data = try message.serializedBytes()
        let fast = try LHFastEncoding.serializedData(message)
        #expect(
            fast == library, "\(M.self) \(label): \(fast.count) bytes against the library's \(library.count)",
            sourceLocation: sourceLocation)
        #expect(try LHFastEncoding.serializedBytes(message) == [UInt8](library), sourceLocation: sourceLocation)
        #expect(try LHFastEncoding.serializedSize(message) == library.count, sourceLocation: sourceLocation)
        #expect(try M(serializedBytes: fast) == message, sourceLocation: sourceLocation)
        let prepared = try LHFastEncoding.prepare(message)
        var buffer = [UInt8](repeating: 0xAA, count: prepared.size)
        try buffer.withUnsafeMutableBytes { try prepared.write(into: $0) }
        #expect(buffer == [UInt8](library), sourceLocation: sourceLocation)
    }

    @Test(arguments: ProtoCompatibilityTests.fixtures)
    func wfSpecsOfThePythonSDKWithTheirMapsAndNesting(name: String) throws {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: "bin", subdirectory: "Fixtures"))
        let request = try Littlehorse_PutWfSpecRequest(serializedBytes: try Data(contentsOf: url))
        #expect(!request.threadSpecs.isEmpty)
        try expectSameBytes(request, name)
    }

    @Test func everyScalarKindIncludingNegativesAndLongValues() throws {
        let long = String(repeating: "ünïcode ✓ ", count: 2_000)  // a length of 3 varint bytes
        for value in [
            Littlehorse_VariableValue.with { $0.int = -1 },
            .with { $0.int = Int64.min },
            .with { $0.int = Int64.max },
            .with { $0.int = 0 },
            .with { $0.double = -0.0 },
            .with { $0.double = 3.141592653589793 },
            .with { $0.bool = true },
            .with { $0.bool = false },
            .with { $0.str = "" },
            .with { $0.str = long },
            .with { $0.bytes = Data((0..<300).map { UInt8($0 & 0xFF) }) },
            .with { $0.jsonObj = "{\"a\": [1, 2, 3]}" },
            Littlehorse_VariableValue(),
        ] {
            try expectSameBytes(value)
        }
        try expectSameBytes(
            Littlehorse_ExponentialBackoffRetryPolicy.with {
                $0.baseIntervalMs = -7
                $0.maxDelayMs = 1 << 40
                $0.multiplier = 1.5
            })
        try expectSameBytes(
            Littlehorse_NodeRunId.with {
                $0.wfRunID.id = "w"
                $0.threadRunNumber = -1
                $0.position = Int32.max
            })
    }

    @Test func packedRepeatedEnumsOptionalsAndOneofsOfAStoredWfRun() throws {
        var stored = Lhstore_StoredWfRun()
        stored.wfRun.id.id = "wf-1"
        stored.wfRun.status = .running
        stored.wfRun.greatestThreadrunNumber = 2
        stored.wfRun.startTime = Google_Protobuf_Timestamp(seconds: 1_700_000_000, nanos: 123_456_789)
        for n in 0..<3 {
            stored.wfRun.threadRuns.append(
                .with {
                    $0.number = Int32(n)
                    $0.status = n == 0 ? .halted : .running
                    $0.threadSpecName = "thread-\(n)"
                    $0.childThreadIds = [1, -2, 300, Int32.max, Int32.min]
                    $0.handledFailedChildren = n == 2 ? [5] : []
                    if n > 0 { $0.parentThreadID = 0 }
                })
        }
        for p in 0..<5 {
            stored.nodeRuns.append(
                .with {
                    $0.id.wfRunID.id = "wf-1"
                    $0.id.position = Int32(p)
                    $0.status = .completed
                    $0.arrivalTime = Google_Protobuf_Timestamp(seconds: Int64(p))
                    $0.nodeName = "\(p)-task"
                })
        }
        stored.taskRuns.append(
            .with {
                $0.id.wfRunID.id = "wf-1"
                $0.id.taskGuid = "guid"
                $0.status = .taskSuccess
                $0.attempts = [
                    .with {
                        $0.status = .taskFailed; $0.error.message = "boom"
                    },
                    .with {
                        $0.status = .taskSuccess; $0.output.str = "done"; $0.taskWorkerVersion = ""
                    },
                ]
                $0.inputVariables = [
                    .with {
                        $0.varName = "x"; $0.value.int = -3
                    }
                ]
                $0.exponentialBackoff.multiplier = 2
            })
        stored.variables.append(
            .with {
                $0.id.name = "v"; $0.value.double = 1e300
            })
        stored.externalEvents.append(
            .with {
                $0.id.guid = "e"; $0.content.bool = true
            })
        try expectSameBytes(stored)
        try expectSameBytes(Lhstore_StoredWfRun())
    }

    @Test func envelopesAndMapsOfMessagesAndUnknownFields() throws {
        var run = Littlehorse_RunWfRequest()
        run.wfSpecName = "spec"
        for i in 0..<20 { run.variables["var-\(i)"] = .with { $0.int = Int64(i * 1_000_003) } }
        try expectSameBytes(
            Lhwire_Envelope.with {
                $0.id = 42; $0.runWf = run
            })
        var scheduled = Littlehorse_ScheduledTask()
        scheduled.taskRunID.taskGuid = "g"
        scheduled.attemptNumber = 3
        try expectSameBytes(Lhwire_Envelope.with { $0.scheduledTask = scheduled })

        // Bytes of a field this build does not know (number 1000, a varint) stay as they came.
        var bytes: [UInt8] = try run.serializedBytes()
        bytes += [0xC0, 0x3E, 0x96, 0x01]
        let withUnknown = try Littlehorse_RunWfRequest(serializedBytes: bytes)
        #expect(!withUnknown.unknownFields.data.isEmpty)
        try expectSameBytes(withUnknown, "with unknown fields")
    }
}
