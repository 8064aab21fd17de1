import Foundation
import LHProto
import SwiftProtobuf
import Testing

/// `LHProtoJSON` prints what LittleHorse's lhctl prints. The expected texts
/// in Fixtures/lhctl-json were written by Go's protojson with lhctl's options
/// (make-lhctl-json.sh), from what lh-server answered in seed 003's
/// walkthrough and the tests' workflows.
@Suite struct LHProtoJSONTests {
    /// Every message type a case may name.
    static let types: [any SwiftProtobuf.Message.Type] = [
        Littlehorse_Variable.self, Littlehorse_VariableList.self,
        Littlehorse_WfRun.self, Littlehorse_WfRunIdList.self,
        Littlehorse_NodeRun.self, Littlehorse_NodeRunList.self,
        Littlehorse_TaskRun.self, Littlehorse_TaskRunList.self, Littlehorse_TaskRunIdList.self,
        Littlehorse_ExternalEvent.self, Littlehorse_ExternalEventList.self,
        Littlehorse_WfSpec.self, Littlehorse_TaskDef.self, Littlehorse_ExternalEventDef.self,
        Littlehorse_PutWfSpecRequest.self,
    ]

    static let folder = Bundle.module.url(forResource: "lhctl-json", withExtension: nil, subdirectory: "Fixtures")

    static let cases: [String] = {
        guard let folder, let names = try? FileManager.default.contentsOfDirectory(atPath: folder.path) else {
            return []
        }
        return names.filter { $0.hasSuffix(".in.json") }.map { String($0.dropLast(".in.json".count)) }.sorted()
    }()

    func file(_ name: String) throws -> Data {
        let folder = try #require(Self.folder, "Fixtures/lhctl-json is not in the test bundle")
        return try Data(contentsOf: folder.appendingPathComponent(name))
    }

    static func decode<M: SwiftProtobuf.Message>(_ type: M.Type, _ bytes: Data) throws -> M {
        try M(serializedBytes: bytes)
    }

    @Test func theFixturesAreThere() {
        // A parameterized test over no cases would pass without checking anything.
        #expect(Self.cases.count >= 10, "cases found: \(Self.cases)")
    }

    @Test(arguments: cases)
    func printsWhatLittleHorsesLhctlPrints(name: String) throws {
        let input = try JSONSerialization.jsonObject(with: try file(name + ".in.json")) as? [String: Any]
        let typeName = try #require(input?["type"] as? String, "\(name).in.json names no type")
        let type = try #require(
            Self.types.first { $0.protoMessageName == typeName },
            "no Swift type for \(typeName) in LHProtoJSONTests.types")
        let message = try Self.decode(type, try file(name + ".bin"))
        let expected = String(decoding: try file(name + ".lhctl.json"), as: UTF8.self)
        let printed = try LHProtoJSON.string(message) + "\n"
        if printed != expected {
            let a = printed.split(separator: "\n", omittingEmptySubsequences: false)
            let b = expected.split(separator: "\n", omittingEmptySubsequences: false)
            let line = (0..<min(a.count, b.count)).first { a[$0] != b[$0] } ?? min(a.count, b.count)
            Issue.record(
                """
                \(name) (\(typeName)) differs from protojson's at line \(line + 1):
                  ours:   \(line < a.count ? String(a[line]) : "<end>")
                  theirs: \(line < b.count ? String(b[line]) : "<end>")
                """)
        }
    }

    /// Seed 003, `lhctl get variable my-wf 0 all-underpants`, as printed there.
    @Test func theSeedsVariablePrintsAsInTheSeed() throws {
        let variable = Littlehorse_Variable.with {
            $0.id.wfRunID.id = "my-wf"
            $0.id.name = "all-underpants"
            $0.value.jsonArr = #"["obiwan"]"#
            $0.createdAt = Google_Protobuf_Timestamp(seconds: 1_742_047_128, nanos: 695_000_000)
            $0.wfSpecID.name = "collect-underpants"
        }
        #expect(
            try LHProtoJSON.string(variable) == #"""
                {
                  "id": {
                    "wfRunId": {
                      "id": "my-wf"
                    },
                    "threadRunNumber": 0,
                    "name": "all-underpants"
                  },
                  "value": {
                    "jsonArr": "[\"obiwan\"]"
                  },
                  "createdAt": "2025-03-15T13:58:48.695Z",
                  "wfSpecId": {
                    "name": "collect-underpants",
                    "majorVersion": 0,
                    "revision": 0
                  },
                  "masked": false
                }
                """#)
    }

    @Test func unsetFieldsPrintAsProtojsonPrintsThem() throws {
        // A ThreadRun with nothing set: scalars at their default, enums by the
        // name of their zero value, repeated fields as [], an unset message as
        // null, proto3 `optional` fields (end_time, parent_thread_id) left out.
        let text = try LHProtoJSON.string(Littlehorse_ThreadRun())
        #expect(text.contains(#""number": 0"#))
        #expect(text.contains(#""status": "STARTING""#))
        #expect(text.contains(#""threadSpecName": """#))
        #expect(text.contains(#""childThreadIds": []"#))
        #expect(text.contains(#""wfSpecId": null"#))
        #expect(!text.contains("endTime"))
        #expect(!text.contains("parentThreadId"))
    }

    @Test func mapsAreSortedByKeyAndOneofsLeaveOutWhatIsUnset() throws {
        var spec = Littlehorse_WfSpec()
        spec.threadSpecs["zeta"] = Littlehorse_ThreadSpec()
        spec.threadSpecs["alpha"] = Littlehorse_ThreadSpec()
        let text = try LHProtoJSON.string(spec)
        let alpha = try #require(text.range(of: #""alpha": {"#))
        let zeta = try #require(text.range(of: #""zeta": {"#))
        #expect(alpha.lowerBound < zeta.lowerBound)
        // VariableValue is one oneof: an empty one prints as {}.
        #expect(try LHProtoJSON.string(Littlehorse_VariableValue()) == "{}")
    }
}
