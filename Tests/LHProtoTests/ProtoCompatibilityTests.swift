import Foundation
import LHProto
import SwiftProtobuf
import Testing

/// The fixtures were made by LittleHorse's own Python SDK
/// (Fixtures/make-fixtures.py): our generated types must read them, and
/// write the very same bytes back.
@Suite struct ProtoCompatibilityTests {
    static let fixtures = ["collect-underpants", "kitchen-sink"]

    func fixture(_ name: String, _ ext: String) throws -> Data {
        let url = try #require(Bundle.module.url(forResource: name, withExtension: ext, subdirectory: "Fixtures"))
        return try Data(contentsOf: url)
    }

    var deterministic: BinaryEncodingOptions {
        var options = BinaryEncodingOptions()
        options.useDeterministicOrdering = true
        return options
    }

    @Test(arguments: fixtures)
    func pythonSDKJSONEncodesToThePythonSDKBytes(name: String) throws {
        let json = try fixture(name, "json")
        let request = try Littlehorse_PutWfSpecRequest(jsonUTF8Data: json)
        let ours: Data = try request.serializedBytes(options: deterministic)
        let theirs = try fixture(name, "bin")
        #expect(ours == theirs, "binary encoding of \(name).json differs from the Python SDK's")
    }

    @Test(arguments: fixtures)
    func pythonSDKBytesRoundTripByteForByte(name: String) throws {
        let theirs = try fixture(name, "bin")
        let request = try Littlehorse_PutWfSpecRequest(serializedBytes: theirs)
        #expect(request.unknownFields.data.isEmpty)
        let again: Data = try request.serializedBytes(options: deterministic)
        #expect(again == theirs)
        let fromJSON = try Littlehorse_PutWfSpecRequest(jsonUTF8Data: try fixture(name, "json"))
        #expect(fromJSON == request)
    }

    @Test func collectUnderpantsHasTheSeedsShape() throws {
        let request = try Littlehorse_PutWfSpecRequest(jsonUTF8Data: try fixture("collect-underpants", "json"))
        #expect(request.name == "collect-underpants")
        #expect(request.entrypointThreadName == "entrypoint")
        let entry = try #require(request.threadSpecs["entrypoint"])
        #expect(entry.interruptDefs.count == 1)
        #expect(entry.interruptDefs[0].externalEventDefID.name == "underpant-collected")
        let handlerName = entry.interruptDefs[0].handlerSpecName
        let handler = try #require(request.threadSpecs[handlerName])
        #expect(handler.variableDefs.map(\.varDef.name) == ["INPUT"])
        #expect(handler.variableDefs[0].varDef.typeDef.primitiveType == .str)
        let kinds = entry.nodes.values.compactMap { node -> String? in
            switch node.node {
            case .task: "task"
            case .externalEvent: "externalEvent"
            case .entrypoint: "entrypoint"
            case .exit: "exit"
            default: nil
            }
        }.sorted()
        #expect(kinds == ["entrypoint", "exit", "externalEvent", "task", "task"])
        let mutation = try #require(handler.nodes.values.flatMap(\.outgoingEdges).flatMap(\.variableMutations).first)
        #expect(mutation.lhsName == "all-underpants")
        #expect(mutation.operation == .add)
        #expect(mutation.rhsAssignment.variableName == "INPUT")
    }

    @Test func unknownJSONFieldIsRefusedByName() throws {
        let json = #"{"name": "x", "threadSpecs": {"entrypoint": {"nodes": {"a": {"userTask": {}, "notAField": 1}}}}}"#
        #expect(throws: (any Error).self) { try Littlehorse_PutWfSpecRequest(jsonString: json) }
    }
}
