import LHWireProto

extension Lhwire_Envelope.OneOf_Kind {
    /// LittleHorse's RPC name of a request (RunWf, ReportTask, ...): the
    /// `kind` label of `lh_requests_total`, the same for both doors. A plain
    /// switch: counted on every request.
    var rpcName: String {
        switch self {
        case .putTaskDef: "PutTaskDef"
        case .getTaskDef: "GetTaskDef"
        case .putExternalEventDef: "PutExternalEventDef"
        case .getExternalEventDef: "GetExternalEventDef"
        case .putWfSpec: "PutWfSpec"
        case .getWfSpec: "GetWfSpec"
        case .getLatestWfSpec: "GetLatestWfSpec"
        case .runWf: "RunWf"
        case .getWfRun: "GetWfRun"
        case .stopWfRun: "StopWfRun"
        case .resumeWfRun: "ResumeWfRun"
        case .deleteWfRun: "DeleteWfRun"
        case .putExternalEvent: "PutExternalEvent"
        case .getExternalEvent: "GetExternalEvent"
        case .listExternalEvents: "ListExternalEvents"
        case .getNodeRun: "GetNodeRun"
        case .listNodeRuns: "ListNodeRuns"
        case .getTaskRun: "GetTaskRun"
        case .listTaskRuns: "ListTaskRuns"
        case .getVariable: "GetVariable"
        case .listVariables: "ListVariables"
        case .searchWfRun: "SearchWfRun"
        case .searchTaskRun: "SearchTaskRun"
        case .searchVariable: "SearchVariable"
        case .getServerVersion: "GetServerVersion"
        case .searchWfSpec: "SearchWfSpec"
        case .searchTaskDef: "SearchTaskDef"
        case .searchExternalEventDef: "SearchExternalEventDef"
        case .subscribe: "Subscribe"
        case .reportTask: "ReportTask"
        case .hello: "Hello"
        case .heartbeat: "Heartbeat"
        default: "NotARequest"
        }
    }
}
