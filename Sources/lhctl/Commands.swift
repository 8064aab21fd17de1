import ArgumentParser
import Foundation
import LHClient
import SwiftProtobuf

/// Runs `body` with a client; errors go to stderr with a non-zero exit.
func withClient(_ connection: ConnectionOptions, _ body: (LittleHorseClient) async throws -> Void) async {
    do {
        try await connection.withClient(body)
    } catch {
        fail(error)
    }
}

struct Deploy: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Deploys metadata from a protobuf JSON file.",
        subcommands: [DeployWfSpec.self, DeployTaskDef.self, DeployExternalEventDef.self])
}

func readFile(_ path: String) throws -> Data {
    guard let data = FileManager.default.contents(atPath: path) else {
        throw ValidationError("cannot read file '\(path)'")
    }
    return data
}

func parseJSON<M: SwiftProtobuf.Message>(_ type: M.Type, _ path: String) throws -> M {
    do {
        return try M(jsonUTF8Data: try readFile(path))
    } catch let e as ValidationError {
        throw e
    } catch {
        throw ValidationError("'\(path)' is not a valid \(M.protoMessageName) in protobuf JSON: \(error)")
    }
}

struct DeployWfSpec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wfSpec", abstract: "Deploys a PutWfSpecRequest (protobuf JSON).")
    @Argument var file: String
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        let request = try parseJSON(Littlehorse_PutWfSpecRequest.self, file)
        await withClient(connection) { try printJSON(try await $0.putWfSpec(request)) }
    }
}

struct DeployTaskDef: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "taskDef", abstract: "Deploys a PutTaskDefRequest (protobuf JSON).")
    @Argument var file: String
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        let request = try parseJSON(Littlehorse_PutTaskDefRequest.self, file)
        await withClient(connection) { try printJSON(try await $0.putTaskDef(request)) }
    }
}

struct DeployExternalEventDef: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "externalEventDef", abstract: "Deploys a PutExternalEventDefRequest (protobuf JSON).")
    @Argument var file: String
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        let request = try parseJSON(Littlehorse_PutExternalEventDefRequest.self, file)
        await withClient(connection) { try printJSON(try await $0.putExternalEventDef(request)) }
    }
}

struct Run: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Runs a WfSpec: run WFSPEC [--wfRunId ID] [VAR VALUE]...")
    @Argument(help: "The WfSpec's name.") var wfSpecName: String
    @Option(name: .customLong("wfRunId"), help: "The WfRun's id (default: generated).") var wfRunId: String?
    @Option(name: .customLong("majorVersion")) var majorVersion: Int32?
    @Option(name: .customLong("revision")) var revision: Int32?
    @Argument(help: "Variables as NAME VALUE pairs, VALUE parsed as the variable's declared type.") var variables:
        [String] = []
    @OptionGroup var connection: ConnectionOptions

    func validate() throws {
        guard variables.count % 2 == 0 else {
            throw ValidationError("variables come as NAME VALUE pairs; '\(variables.last!)' has no value")
        }
    }

    func run() async throws {
        await withClient(connection) { client in
            let spec = try await client.getLatestWfSpec(wfSpecName, majorVersion: majorVersion)
            let defs = spec.threadSpecs[spec.entrypointThreadName]?.variableDefs ?? []
            var request = Littlehorse_RunWfRequest()
            request.wfSpecName = wfSpecName
            if let majorVersion { request.majorVersion = majorVersion }
            if let revision { request.revision = revision }
            if let wfRunId { request.id = wfRunId }
            for i in stride(from: 0, to: variables.count, by: 2) {
                let name = variables[i]
                guard let def = defs.first(where: { $0.varDef.name == name }) else {
                    throw ValidationError(
                        "WfSpec '\(wfSpecName)' declares no variable '\(name)' (it has: \(defs.map(\.varDef.name).joined(separator: ", ")))"
                    )
                }
                let type = def.varDef.declaredType ?? Littlehorse_VariableType()
                request.variables[name] = try parseValue(variables[i + 1], as: type, what: "variable '\(name)'")
            }
            try printJSON(try await client.runWf(request))
        }
    }
}

struct PostEvent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "postEvent", abstract: "Posts an ExternalEvent: postEvent WFRUNID EVENTDEF [TYPE VALUE]")
    @Argument var wfRunId: String
    @Argument var externalEventDefName: String
    @Argument(help: "STR, INT, DOUBLE, BOOL, JSON_OBJ, JSON_ARR, BYTES (base64) or NULL.") var type: String?
    @Argument var value: String?
    @Option(name: .customLong("guid")) var guid: String?
    @Option(name: .customLong("threadRunNumber")) var threadRunNumber: Int32?
    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        var request = Littlehorse_PutExternalEventRequest()
        request.wfRunID.id = wfRunId
        request.externalEventDefID.name = externalEventDefName
        if let guid { request.guid = guid }
        if let threadRunNumber { request.threadRunNumber = threadRunNumber }
        if let type, type.uppercased() != "NULL" {
            guard let t = Littlehorse_VariableType(name: type) else {
                throw ValidationError(
                    "unknown type '\(type)': use STR, INT, DOUBLE, BOOL, JSON_OBJ, JSON_ARR, BYTES or NULL")
            }
            guard let value else { throw ValidationError("type \(type) needs a VALUE") }
            request.content = try parseValue(value, as: t, what: "event content")
        }
        await withClient(connection) { try printJSON(try await $0.putExternalEvent(request)) }
    }
}

struct Get: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Shows one object.",
        subcommands: [
            GetWfRun.self, GetNodeRun.self, GetTaskRun.self, GetVariable.self, GetExternalEvent.self, GetWfSpec.self,
            GetTaskDef.self, GetExternalEventDef.self,
        ])
}

struct GetWfRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wfRun")
    @Argument var wfRunId: String
    @OptionGroup var connection: ConnectionOptions
    func run() async throws { await withClient(connection) { try printJSON(try await $0.getWfRun(wfRunId)) } }
}

struct GetNodeRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "nodeRun", abstract: "get nodeRun WFRUNID THREADRUNNUMBER POSITION")
    @Argument var wfRunId: String
    @Argument var threadRunNumber: Int32
    @Argument var position: Int32
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        await withClient(connection) {
            try printJSON(
                try await $0.getNodeRun(
                    .with {
                        $0.wfRunID.id = wfRunId; $0.threadRunNumber = threadRunNumber; $0.position = position
                    }))
        }
    }
}

struct GetTaskRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "taskRun", abstract: "get taskRun WFRUNID TASKGUID")
    @Argument var wfRunId: String
    @Argument var taskGuid: String
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        await withClient(connection) {
            try printJSON(
                try await $0.getTaskRun(
                    .with {
                        $0.wfRunID.id = wfRunId; $0.taskGuid = taskGuid
                    }))
        }
    }
}

struct GetVariable: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "variable", abstract: "get variable WFRUNID THREADRUNNUMBER NAME")
    @Argument var wfRunId: String
    @Argument var threadRunNumber: Int32
    @Argument var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        await withClient(connection) {
            try printJSON(
                try await $0.getVariable(
                    .with {
                        $0.wfRunID.id = wfRunId; $0.threadRunNumber = threadRunNumber; $0.name = name
                    }))
        }
    }
}

struct GetExternalEvent: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "externalEvent", abstract: "get externalEvent WFRUNID EVENTDEF GUID")
    @Argument var wfRunId: String
    @Argument var externalEventDefName: String
    @Argument var guid: String
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        await withClient(connection) {
            try printJSON(
                try await $0.getExternalEvent(
                    .with {
                        $0.wfRunID.id = wfRunId; $0.externalEventDefID.name = externalEventDefName; $0.guid = guid
                    }))
        }
    }
}

struct GetWfSpec: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "wfSpec")
    @Argument var name: String
    @Option(name: .customLong("majorVersion")) var majorVersion: Int32?
    @Option(name: .customLong("revision")) var revision: Int32?
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        await withClient(connection) { client in
            if let majorVersion, let revision {
                try printJSON(
                    try await client.getWfSpec(
                        .with {
                            $0.name = name; $0.majorVersion = majorVersion; $0.revision = revision
                        }))
            } else {
                try printJSON(try await client.getLatestWfSpec(name, majorVersion: majorVersion))
            }
        }
    }
}

struct GetTaskDef: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "taskDef")
    @Argument var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() async throws { await withClient(connection) { try printJSON(try await $0.getTaskDef(name)) } }
}

struct GetExternalEventDef: AsyncParsableCommand {
    static let configuration = CommandConfiguration(commandName: "externalEventDef")
    @Argument var name: String
    @OptionGroup var connection: ConnectionOptions
    func run() async throws { await withClient(connection) { try printJSON(try await $0.getExternalEventDef(name)) } }
}

struct List: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Lists the objects of one WfRun: list nodeRun|variable|taskRun|externalEvent WFRUNID")
    @Argument(help: "nodeRun, variable, taskRun or externalEvent") var kind: String
    @Argument var wfRunId: String
    @Option(name: .customLong("threadRunNumber")) var threadRunNumber: Int32?
    @OptionGroup var connection: ConnectionOptions
    func validate() throws {
        guard ["nodeRun", "variable", "taskRun", "externalEvent"].contains(kind) else {
            throw ValidationError("cannot list '\(kind)': use nodeRun, variable, taskRun or externalEvent")
        }
    }
    func run() async throws {
        await withClient(connection) { client in
            switch kind {
            case "nodeRun": try printJSON(try await client.listNodeRuns(wfRunId, threadRunNumber: threadRunNumber))
            case "variable": try printJSON(try await client.listVariables(wfRunId))
            case "taskRun": try printJSON(try await client.listTaskRuns(wfRunId))
            default: try printJSON(try await client.listExternalEvents(wfRunId))
            }
        }
    }
}

struct Search: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Searches WfRuns or TaskRuns.", subcommands: [SearchWfRun.self, SearchTaskRun.self])
}

struct SearchWfRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "wfRun", abstract: "search wfRun WFSPEC [--status S] [--limit N]")
    @Argument var wfSpecName: String
    @Option var status: String?
    @Option var limit: Int32?
    @Option var bookmark: String?
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        var r = Littlehorse_SearchWfRunRequest()
        r.wfSpecName = wfSpecName
        if let status {
            guard let s = Littlehorse_LHStatus(lhName: status) else {
                throw ValidationError(
                    "unknown status '\(status)': use STARTING, RUNNING, COMPLETED, HALTING, HALTED, ERROR or EXCEPTION")
            }
            r.status = s
        }
        if let limit { r.limit = limit }
        if let bookmark, let b = Data(base64Encoded: bookmark) { r.bookmark = b }
        await withClient(connection) { try printJSON(try await $0.searchWfRun(r)) }
    }
}

struct SearchTaskRun: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "taskRun", abstract: "search taskRun TASKDEF [--status S] [--limit N]")
    @Argument var taskDefName: String
    @Option var status: String?
    @Option var limit: Int32?
    @OptionGroup var connection: ConnectionOptions
    func run() async throws {
        var r = Littlehorse_SearchTaskRunRequest()
        r.taskDefName = taskDefName
        if let status {
            let all: [String: Littlehorse_TaskStatus] = [
                "TASK_SCHEDULED": .taskScheduled, "TASK_RUNNING": .taskRunning, "TASK_SUCCESS": .taskSuccess,
                "TASK_FAILED": .taskFailed, "TASK_TIMEOUT": .taskTimeout, "TASK_EXCEPTION": .taskException,
                "TASK_OUTPUT_SERDE_ERROR": .taskOutputSerdeError, "TASK_INPUT_VAR_SUB_ERROR": .taskInputVarSubError,
            ]
            guard let s = all[status.uppercased()] else {
                throw ValidationError("unknown status '\(status)': use \(all.keys.sorted().joined(separator: ", "))")
            }
            r.status = s
        }
        if let limit { r.limit = limit }
        await withClient(connection) { try printJSON(try await $0.searchTaskRun(r)) }
    }
}

extension Littlehorse_LHStatus {
    init?(lhName: String) {
        let all: [String: Littlehorse_LHStatus] = [
            "STARTING": .starting, "RUNNING": .running, "COMPLETED": .completed, "HALTING": .halting,
            "HALTED": .halted, "ERROR": .error, "EXCEPTION": .exception,
        ]
        guard let s = all[lhName.uppercased()] else { return nil }
        self = s
    }
}

/// `stop wfRun ID`, `resume wfRun ID`, `delete wfRun ID`.
struct Stop: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "stop wfRun WFRUNID [--threadRunNumber N]")
    @Argument var kind: String
    @Argument var wfRunId: String
    @Option(name: .customLong("threadRunNumber")) var threadRunNumber: Int32 = 0
    @OptionGroup var connection: ConnectionOptions
    func validate() throws {
        guard kind == "wfRun" else { throw ValidationError("can only stop a wfRun, not '\(kind)'") }
    }
    func run() async throws {
        await withClient(connection) {
            try await $0.stopWfRun(wfRunId, threadRunNumber: threadRunNumber); print("{}")
        }
    }
}

struct Resume: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "resume wfRun WFRUNID [--threadRunNumber N]")
    @Argument var kind: String
    @Argument var wfRunId: String
    @Option(name: .customLong("threadRunNumber")) var threadRunNumber: Int32 = 0
    @OptionGroup var connection: ConnectionOptions
    func validate() throws {
        guard kind == "wfRun" else { throw ValidationError("can only resume a wfRun, not '\(kind)'") }
    }
    func run() async throws {
        await withClient(connection) {
            try await $0.resumeWfRun(wfRunId, threadRunNumber: threadRunNumber); print("{}")
        }
    }
}

struct Delete: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "delete wfRun WFRUNID")
    @Argument var kind: String
    @Argument var wfRunId: String
    @OptionGroup var connection: ConnectionOptions
    func validate() throws {
        guard kind == "wfRun" else { throw ValidationError("can only delete a wfRun, not '\(kind)'") }
    }
    func run() async throws {
        await withClient(connection) {
            try await $0.deleteWfRun(wfRunId); print("{}")
        }
    }
}
