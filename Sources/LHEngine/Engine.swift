import Foundation
import LHProto
import SwiftProtobuf

/// What the engine needs besides a WfRun's state: its WfSpec and the TaskDefs
/// it uses.
public struct LHEngineContext: Sendable {
    public var spec: Littlehorse_WfSpec
    public var taskDefs: [String: Littlehorse_TaskDef]
    public var limits: Limits

    /// Keeps a WfRun from running away.
    public struct Limits: Sendable {
        /// ThreadRuns in one WfRun.
        public var maxThreadRuns = 5_000
        /// NodeRuns started while applying one command.
        public var maxNodeRunsPerCommand = 10_000
        /// Default attempt timeout of a TASK node without one.
        public var defaultTaskTimeoutSeconds: Int32 = 60
        public init() {}
    }

    public init(spec: Littlehorse_WfSpec, taskDefs: [String: Littlehorse_TaskDef], limits: Limits = .init()) {
        self.spec = spec
        self.taskDefs = taskDefs
        self.limits = limits
    }
}

/// The pure state machine of LittleHorse's workflow model: a command and the
/// time come in, the WfRun's new state and a list of effects come out. No
/// sockets, files or clocks.
///
/// ```swift
/// var (state, effects) = try WorkflowEngine.runWf(request, id: "my-wf", context: ctx, now: now)
/// effects = try WorkflowEngine.apply(.taskStarted(taskGuid: g, attempt: 0, workerId: "w1"), to: &state, context: ctx, now: now)
/// ```
public enum WorkflowEngine {
    /// Starts a WfRun: checks the input variables against the entrypoint
    /// ThreadSpec and runs until every thread waits.
    /// `earlierEvents` were posted to this id before the WfRun existed: they
    /// interrupt nothing but can satisfy its EXTERNAL_EVENT nodes.
    public static func runWf(
        _ request: Littlehorse_RunWfRequest, id: String, context: LHEngineContext, now: Date,
        earlierEvents: [Littlehorse_ExternalEvent] = []
    ) throws -> (WfRunState, [LHEffect]) {
        let spec = context.spec
        guard let entry = spec.threadSpecs[spec.entrypointThreadName] else {
            throw LHEngineError.invalid(
                "WfSpec '\(spec.id.name)' has no entrypoint ThreadSpec '\(spec.entrypointThreadName)'")
        }
        let declared = Dictionary(entry.variableDefs.map { ($0.varDef.name, $0) }, uniquingKeysWith: { a, _ in a })
        var inputs: [String: Value] = [:]
        for (name, value) in request.variables.sorted(by: { $0.key < $1.key }) {
            guard let def = declared[name] else {
                throw LHEngineError.invalid(
                    "variable '\(name)' is not declared by the entrypoint thread of WfSpec '\(spec.id.name)'")
            }
            let type = def.varDef.declaredType
            do {
                inputs[name] = try type.map { try value.cast(to: $0) } ?? value
            } catch {
                throw LHEngineError.invalid("variable '\(name)' is \(type?.name ?? "?"): \(error)")
            }
        }
        for def in entry.variableDefs where def.required && (inputs[def.varDef.name]?.isNull ?? true) {
            throw LHEngineError.invalid(
                "variable '\(def.varDef.name)' is required by WfSpec '\(spec.id.name)' but was not given")
        }
        var wfRun = Littlehorse_WfRun()
        wfRun.id.id = id
        wfRun.wfSpecID = spec.id
        wfRun.status = .running
        wfRun.startTime = Google_Protobuf_Timestamp(date: now)
        wfRun.greatestThreadrunNumber = -1
        var initial = WfRunState(wfRun: wfRun)
        initial.externalEvents = earlierEvents
        var run = Run(state: initial, context: context, now: now)
        _ = run.startThread(specName: spec.entrypointThreadName, type: .entrypoint, parent: nil, inputs: inputs)
        run.settle()
        return (run.state, run.effects)
    }

    /// Applies one command. A command that refers to something the WfRun does
    /// not have throws; a late or repeated report is ignored (no effects).
    public static func apply(
        _ command: LHCommand, to state: inout WfRunState, context: LHEngineContext, now: Date
    ) throws -> [LHEffect] {
        var run = Run(state: state, context: context, now: now)
        try run.apply(command)
        run.settle()
        state = run.state
        return run.effects
    }
}
