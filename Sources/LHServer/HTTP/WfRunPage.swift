import Foundation
import LHEngine
import LHProto

/// The page of one WfRun: its ThreadRun tree with halt reasons in plain
/// words, the selected thread's graph coloured by NodeRun status, its
/// NodeRuns and variables, every TaskRun attempt, and the ExternalEvents
/// with what they triggered. Pure: a state and its WfSpec in, HTML out.
struct WfRunPage {
    let state: WfRunState
    let spec: Littlehorse_WfSpec?
    /// The thread whose graph and NodeRuns are shown.
    let selected: Int32
    /// Forms for stop, resume and posting an event (actions turned on).
    let actions: Bool

    /// NodeRuns by thread, in position order (built once: a WfRun may have thousands).
    private let nodeRunsByThread: [Int32: [Littlehorse_NodeRun]]

    init(state: WfRunState, spec: Littlehorse_WfSpec?, selected: Int32, actions: Bool) {
        self.state = state
        self.spec = spec
        self.selected = selected
        self.actions = actions
        var byThread: [Int32: [Littlehorse_NodeRun]] = [:]
        for key in state.nodeRuns.keys.sorted() { byThread[key.thread, default: []].append(state.nodeRuns[key]!) }
        nodeRunsByThread = byThread
    }

    var refreshes: Bool { !state.wfRun.status.isTerminal }

    func render() -> String {
        let run = state.wfRun
        var body = """
            <h1>WfRun <code id="wf-run-id">\(html: run.id.id)</code> \(status(run.status))</h1>
            <div class="box">WfSpec <a href="/wfSpecs/\(url: run.wfSpecID.name)/\(run.wfSpecID.majorVersion)/\(run.wfSpecID.revision)">\
            \(html: run.wfSpecID.name) v\(run.wfSpecID.majorVersion).\(run.wfSpecID.revision)</a> · started \
            \(run.startTime.shown)\(run.hasEndTime ? " · ended \(run.endTime.shown)" : "")\
            \(refreshes ? " · <span class=\"muted\">refreshes every 2 s while running</span>" : "")</div>

            """
        if actions { body += actionForms() }
        body += "<h2>Threads</h2>\n<div class=\"box\" id=\"threads\">" + threadTree() + "</div>\n"
        body += selectedThread()
        body += taskRuns()
        body += externalEvents()
        return dashboardPage(title: "WfRun \(run.id.id)", refresh: refreshes ? 2 : nil, body: body)
    }

    private func status(_ s: Littlehorse_LHStatus) -> String {
        "<span class=\"status \(s.protoName)\">\(s.protoName)</span>"
    }

    /// Threads nested under their parents; handlers marked by type.
    private func threadTree() -> String {
        let threads = state.wfRun.threadRuns
        var children: [Int32: [Littlehorse_ThreadRun]] = [:]
        var roots: [Littlehorse_ThreadRun] = []
        for t in threads {
            if t.hasParentThreadID, state.thread(t.parentThreadID) != nil {
                children[t.parentThreadID, default: []].append(t)
            } else {
                roots.append(t)
            }
        }
        func item(_ t: Littlehorse_ThreadRun) -> String {
            let kind: String
            switch t.type {
            case .entrypoint: kind = "ENTRYPOINT"
            case .child: kind = "CHILD"
            case .interrupt: kind = "INTERRUPT handler of event \(HaltWords.eventName(t.interruptTriggerID))"
            case .failureHandler: kind = "FAILURE_HANDLER"
            default: kind = t.type.protoName
            }
            let parent = t.hasParentThreadID ? " · parent thread \(t.parentThreadID)" : ""
            let reasons = HaltWords.lines(for: t, in: state).map { "<div class=\"reason\">\(html: $0)</div>" }.joined()
            let error = t.hasErrorMessage ? "<div class=\"reason\">error: \(html: t.errorMessage)</div>" : ""
            let sub = (children[t.number] ?? []).map(item).joined()
            return """
                <li class="thread" data-thread="\(t.number)" data-type="\(t.type.protoName)" data-status="\(t.status.protoName)" \
                data-parent="\(t.hasParentThreadID ? "\(t.parentThreadID)" : "")">\
                <a href="?thread=\(t.number)"\(t.number == selected ? " class=\"selected\"" : "")>thread \(t.number)</a> \
                <code>\(html: t.threadSpecName)</code> \(status(t.status)) <span class="muted">\(html: kind)\(parent)</span>\
                \(reasons)\(error)\(sub.isEmpty ? "" : "<ul class=\"tree\">\(sub)</ul>")</li>
                """
        }
        return "<ul class=\"tree\">" + roots.map(item).joined() + "</ul>"
    }

    private func selectedThread() -> String {
        guard let thread = state.thread(selected) else { return "<p>No thread \(selected).</p>" }
        var out = "<h2>Thread \(selected) <code>\(html: thread.threadSpecName)</code> \(status(thread.status))</h2>\n"
        let nodeRuns = nodeRunsByThread[selected] ?? []
        if let threadSpec = spec?.threadSpecs[thread.threadSpecName] {
            var graph = ThreadGraph(spec: threadSpec)
            for n in nodeRuns { graph.statuses[n.nodeName] = n.status }
            out += "<div id=\"thread-graph\">" + graph.svg() + "</div>\n"
        }
        out +=
            "<h3>NodeRuns</h3><table id=\"node-runs\"><tr><th>#</th><th>node</th><th>status</th><th>arrived</th>"
            + "<th>ended</th><th>detail</th></tr>\n"
        for n in nodeRuns {
            out +=
                "<tr><td>\(n.id.position)</td><td>\(html: n.nodeName)</td><td>\(status(n.status))</td>"
                + "<td>\(n.arrivalTime.shown)</td><td>\(n.hasEndTime ? n.endTime.shown : "")</td>"
                + "<td>\(html: nodeDetail(n))</td></tr>\n"
        }
        out += "</table>\n<h3>Variables</h3><table id=\"variables\"><tr><th>name</th><th>value</th></tr>\n"
        for (key, v) in state.variables.sorted(by: { $0.key < $1.key }) where key.thread == selected {
            out +=
                "<tr><td>\(html: key.name)</td><td><code>\(html: v.masked ? "*****" : shownValue(v.value))</code></td></tr>\n"
        }
        return out + "</table>\n"
    }

    private func nodeDetail(_ n: Littlehorse_NodeRun) -> String {
        var parts: [String] = []
        switch n.nodeType {
        case .task(let t): parts.append("TaskRun \(t.taskRunID.taskGuid)")
        case .externalEvent(let e):
            parts.append(
                e.hasExternalEventID
                    ? "got event \(HaltWords.eventName(e.externalEventID))"
                    : (e.timedOut ? "timed out" : "waiting for \(e.externalEventDefID.name)"))
        case .startThread(let s): parts.append("started thread \(s.childThreadID)")
        case .sleep(let s): parts.append(s.matured ? "matured" : "sleeping until \(s.maturationTime.shown)")
        default: break
        }
        if n.hasErrorMessage { parts.append(n.errorMessage) }
        for f in n.failures { parts.append("failure \(f.failureName): \(f.message)") }
        return parts.joined(separator: "; ")
    }

    private func taskRuns() -> String {
        var out =
            "<h2>TaskRuns</h2><table id=\"task-runs\"><tr><th>TaskRun</th><th>TaskDef</th><th>status</th>"
            + "<th>attempt</th><th>worker</th><th>scheduled / started / ended</th><th>output or error</th><th>log</th></tr>\n"
        let runs = state.taskRuns.values.sorted {
            ($0.scheduledAt.seconds, $0.scheduledAt.nanos) < ($1.scheduledAt.seconds, $1.scheduledAt.nanos)
        }
        for run in runs {
            for (i, a) in run.attempts.enumerated() {
                let result: String
                switch a.result {
                case .output(let v): result = a.maskedValue ? "*****" : shownValue(v)
                case .error(let e): result = "ERROR \(e.type.protoName): \(e.message)"
                case .exception(let e): result = "EXCEPTION \(e.name): \(e.message)"
                case nil: result = ""
                }
                out +=
                    "<tr data-task-run=\"\(html: run.id.taskGuid)\"><td><code>\(html: run.id.taskGuid)</code></td>"
                    + "<td>\(html: run.taskDefID.name)</td><td>\(a.status.protoName)</td><td>\(i)</td>"
                    + "<td>\(html: a.taskWorkerID)</td><td>\(a.scheduleTime.shown)<br>\(a.startTime.shown)<br>"
                    + "\(a.endTime.shown)</td><td><code>\(html: result)</code></td>"
                    + "<td><pre>\(html: a.hasLogOutput ? shownValue(a.logOutput) : "")</pre></td></tr>\n"
            }
            if run.attempts.isEmpty {
                out +=
                    "<tr><td><code>\(html: run.id.taskGuid)</code></td><td>\(html: run.taskDefID.name)</td>"
                    + "<td>\(run.status.protoName)</td><td colspan=\"5\"></td></tr>\n"
            }
        }
        return out + "</table>\n"
    }

    private func externalEvents() -> String {
        var out =
            "<h2>ExternalEvents</h2><table id=\"external-events\"><tr><th>event</th><th>content</th>"
            + "<th>arrived</th><th>what it did</th></tr>\n"
        for e in state.externalEvents {
            out +=
                "<tr><td>\(html: HaltWords.eventName(e.id))</td><td><code>\(html: shownValue(e.content))</code></td>"
                + "<td>\(e.createdAt.shown)</td><td>\(html: effect(of: e))</td></tr>\n"
        }
        return out + "</table>\n"
    }

    /// Which interrupt an event triggered, or which node took it.
    private func effect(of event: Littlehorse_ExternalEvent) -> String {
        var parts: [String] = []
        for t in state.wfRun.threadRuns where t.type == .interrupt && t.interruptTriggerID == event.id {
            parts.append("interrupted thread \(t.parentThreadID); handler thread \(t.number)")
        }
        for p in state.wfRun.pendingInterrupts where p.externalEventID == event.id {
            parts.append("interrupt of thread \(p.interruptedThreadID) pending (its handler starts once it is HALTED)")
        }
        for n in state.nodeRuns.values {
            if case .externalEvent(let e)? = n.nodeType, e.hasExternalEventID, e.externalEventID == event.id {
                parts.append("taken by node \(n.nodeName) of thread \(n.id.threadRunNumber)")
            }
        }
        return parts.isEmpty ? "not taken yet" : parts.joined(separator: "; ")
    }

    private func actionForms() -> String {
        let id = escapeURL(state.wfRun.id.id)
        return """
            <div class="box" id="actions"><form class="inline" method="post" action="/wfRuns/\(id)/stop">\
            <input type="hidden" name="thread" value="0"><button>Stop</button></form>\
            <form class="inline" method="post" action="/wfRuns/\(id)/resume">\
            <input type="hidden" name="thread" value="0"><button>Resume</button></form>\
            <form class="inline" method="post" action="/wfRuns/\(id)/events">\
            <input name="externalEventDef" placeholder="ExternalEventDef"> <input name="content" placeholder="text content">\
            <button>Post event</button></form> <span class="muted">(needs the operator token or a client certificate)</span></div>

            """
    }
}
