import Foundation
import LHEngine
import LHProto
import LHStore

/// The dashboard's pages, read through the same ``AdminService`` as every
/// other door (committed state only). Server-rendered HTML; the only
/// script-like thing is a meta refresh on a running WfRun's page.
struct Dashboard: Sendable {
    let admin: AdminService
    let actions: Bool

    /// The front page: WfSpecs, TaskDefs, ExternalEventDefs, recent WfRuns.
    func front() throws -> String {
        let metadata = admin.metadata
        var body = "<h1>Overview</h1>\n"
        if let membership = admin.cluster?.membership { body += cluster(membership) }
        body +=
            "<h2>WfSpecs</h2><table id=\"wf-specs\"><tr><th>name</th><th>versions</th>"
            + "<th>threads</th><th>WfRuns</th></tr>\n"
        for name in metadata.wfSpecs.keys.sorted() {
            let versions = metadata.wfSpecs[name] ?? []
            let links = versions.map { s in
                "<a href=\"/wfSpecs/\(escapeURL(name))/\(s.id.majorVersion)/\(s.id.revision)\">"
                    + "v\(s.id.majorVersion).\(s.id.revision)</a>"
            }.joined(separator: " ")
            body +=
                "<tr><td><a href=\"/wfSpecs/\(escapeURL(name))\">\(escapeHTML(name))</a></td><td>\(links)</td>"
                + "<td>\(versions.last?.threadSpecs.count ?? 0)</td>"
                + "<td><a href=\"/wfRuns?wfSpec=\(escapeURL(name))\">search</a></td></tr>\n"
        }
        body +=
            "</table>\n<h2>TaskDefs</h2><table id=\"task-defs\"><tr><th>name</th><th>inputs</th><th>queued</th>"
            + "</tr>\n"
        let depths = admin.dispatcher.queueDepths()
        for (name, def) in metadata.taskDefs.sorted(by: { $0.key < $1.key }) {
            let inputs = def.inputVars.map { "\($0.name): \($0.typeDef.primitiveType.protoName)" }.joined(
                separator: ", ")
            body += "<tr><td>\(escapeHTML(name))</td><td>\(escapeHTML(inputs))</td><td>\(depths[name] ?? 0)</td></tr>\n"
        }
        body +=
            "</table>\n<h2>ExternalEventDefs</h2><table id=\"external-event-defs\"><tr><th>name</th><th>used as "
            + "interrupt by</th></tr>\n"
        for name in metadata.externalEventDefs.keys.sorted() {
            body +=
                "<tr><td>\(escapeHTML(name))</td><td>\(escapeHTML(interruptUses(of: name).joined(separator: ", ")))"
                + "</td></tr>\n"
        }
        body += "</table>\n<h2>Recent WfRuns</h2>\n"
        body += try wfRunTable(try admin.store.recentWfRuns(wfSpecName: nil, status: nil, since: nil, limit: 20))
        return dashboardPage(title: "Overview", body: body)
    }

    /// The cluster this server is a member of: every live member, where it
    /// listens and how many partitions it owns (as this server last read
    /// them, every ownership round).
    private func cluster(_ m: any LHClusterMembership) -> String {
        let counts = m.partitionsByMember
        var out =
            "<h2>Cluster</h2><p id=\"cluster-summary\">This server (member <code>\(escapeHTML(m.memberId))</code>) "
            + "serves \(m.servedPartitions.count) of \(m.partitionCount) partitions"
            + (m.ownsMetadata ? " and writes the metadata" : "") + ".</p>\n"
            + "<table id=\"cluster-members\"><tr><th>member</th><th>address</th><th>gRPC address</th>"
            + "<th>partitions</th></tr>\n"
        for member in m.members {
            let this = member.id == m.memberId
            out +=
                "<tr\(this ? " class=\"this-server\"" : "")><td><code>\(escapeHTML(member.id))</code>"
                + "\(this ? " (this server)" : "")</td>"
                + "<td>\(escapeHTML(member.address.isEmpty ? "-" : member.address))</td>"
                + "<td>\(escapeHTML(member.grpcAddress.isEmpty ? "-" : member.grpcAddress))</td>"
                + "<td>\(counts[member.id] ?? 0)</td></tr>\n"
        }
        return out + "</table>\n"
    }

    /// "spec/thread" of each interrupt the ExternalEventDef triggers.
    private func interruptUses(of eventDef: String) -> [String] {
        var uses: [String] = []
        for (name, versions) in admin.metadata.wfSpecs {
            guard let spec = versions.last else { continue }
            for (threadName, thread) in spec.threadSpecs
            where thread.interruptDefs.contains(where: { $0.externalEventDefID.name == eventDef }) {
                uses.append("\(name)/\(threadName)")
            }
        }
        return uses.sorted()
    }

    /// A table of WfRuns by id (those gone meanwhile are left out).
    private func wfRunTable(_ ids: [String]) throws -> String {
        var out =
            "<table class=\"wf-runs\"><tr><th>WfRun</th><th>WfSpec</th><th>status</th><th>started</th>"
            + "<th>ended</th><th>threads</th></tr>\n"
        for id in ids {
            guard let state = try admin.store.wfRun(id) else { continue }
            let run = state.wfRun
            out +=
                "<tr><td><a href=\"/wfRuns/\(escapeURL(id))\">\(escapeHTML(id))</a></td>"
                + "<td>\(escapeHTML(run.wfSpecID.name)) v\(run.wfSpecID.majorVersion).\(run.wfSpecID.revision)</td>"
                + "<td><span class=\"status \(run.status.protoName)\">\(run.status.protoName)</span></td>"
                + "<td>\(run.startTime.shown)</td><td>\(run.hasEndTime ? run.endTime.shown : "")</td>"
                + "<td>\(run.threadRuns.count)</td></tr>\n"
        }
        return out + "</table>\n"
    }

    /// WfRun search: by WfSpec, status and start time, newest first.
    func search(wfSpec: String?, status: String?, since: String?) throws -> String {
        let wanted = status.flatMap { s in
            Littlehorse_LHStatus.allCases.first { $0.protoName == s.uppercased() }
        }
        if let status, !status.isEmpty, wanted == nil {
            throw LHError(
                .invalidArgument, "status '\(status)' is not one of \(Self.statusNames.joined(separator: ", "))")
        }
        let start = try since.flatMap { try Self.parseSince($0) }
        let spec = wfSpec?.isEmpty == false ? wfSpec : nil
        let ids = try admin.store.recentWfRuns(wfSpecName: spec, status: wanted, since: start, limit: 100)
        let options = ([""] + Self.statusNames).map {
            "<option\($0 == (wanted?.protoName ?? "") ? " selected" : "")>\($0)</option>"
        }.joined()
        var body = """
            <h1>WfRuns</h1>
            <form class="box" method="get" action="/wfRuns">WfSpec <input name="wfSpec" value="\(html: spec ?? "")"> \
            status <select name="status">\(options)</select> \
            started within <input name="since" size="6" value="\(html: since ?? "")" placeholder="1h, 30m, 7d"> \
            <button>Search</button></form>

            """
        body += "<p class=\"muted\">\(ids.count) WfRun\(ids.count == 1 ? "" : "s"), newest first (at most 100)</p>\n"
        body += try wfRunTable(ids)
        return dashboardPage(title: "WfRuns", body: body)
    }

    static let statusNames = ["STARTING", "RUNNING", "COMPLETED", "HALTING", "HALTED", "ERROR", "EXCEPTION"]

    /// "30m", "1h", "7d" ago, or an ISO 8601 time.
    static func parseSince(_ text: String) throws -> Date? {
        let t = text.trimmingCharacters(in: .whitespaces)
        if t.isEmpty { return nil }
        if let unit = t.last, let n = Double(t.dropLast()), n >= 0 {
            let seconds: Double? = ["s": 1, "m": 60, "h": 3600, "d": 86400][String(unit)]
            if let seconds { return Date().addingTimeInterval(-n * seconds) }
        }
        if let date = ISO8601DateFormatter().date(from: t) { return date }
        throw LHError(.invalidArgument, "since '\(text)' is neither a duration like 30m, 1h, 7d nor an ISO 8601 time")
    }

    /// A WfSpec: each ThreadSpec's graph, its variables, interrupts and
    /// failure handlers.
    func wfSpec(name: String, major: Int32?, revision: Int32?) throws -> String {
        let spec: Littlehorse_WfSpec
        if let major, let revision {
            spec = try admin.wfSpec(
                .with {
                    $0.name = name
                    $0.majorVersion = major
                    $0.revision = revision
                })
        } else {
            spec = try admin.latestWfSpec(name, majorVersion: nil)
        }
        let id = spec.id
        var body =
            "<h1>WfSpec <code>\(escapeHTML(id.name))</code> v\(id.majorVersion).\(id.revision)</h1>\n"
            + "<div class=\"box\">entrypoint thread <code>\(escapeHTML(spec.entrypointThreadName))</code> · "
            + "\(spec.threadSpecs.count) ThreadSpec\(spec.threadSpecs.count == 1 ? "" : "s") · "
            + "<a href=\"/wfRuns?wfSpec=\(escapeURL(id.name))\">its WfRuns</a></div>\n"
        let names =
            [spec.entrypointThreadName] + spec.threadSpecs.keys.filter { $0 != spec.entrypointThreadName }.sorted()
        for threadName in names {
            guard let thread = spec.threadSpecs[threadName] else { continue }
            body +=
                "<section class=\"thread-spec\" data-thread-spec=\"\(escapeHTML(threadName))\" "
                + "data-nodes=\"\(thread.nodes.count)\"><h2>ThreadSpec <code>\(escapeHTML(threadName))</code>"
                + "\(role(of: threadName, in: spec))</h2>\n"
            body += ThreadGraph(spec: thread).svg() + "\n"
            if !thread.variableDefs.isEmpty {
                body +=
                    "<h3>Variables</h3><ul>"
                    + thread.variableDefs.map {
                        "<li><code>\(escapeHTML($0.varDef.name))</code> \($0.varDef.typeDef.primitiveType.protoName)</li>"
                    }.joined() + "</ul>\n"
            }
            if !thread.interruptDefs.isEmpty {
                body +=
                    "<h3>Interrupts</h3><ul>"
                    + thread.interruptDefs.map {
                        "<li>ExternalEvent <code>\(escapeHTML($0.externalEventDefID.name))</code> interrupts this "
                            + "thread; handler ThreadSpec <code>\(escapeHTML($0.handlerSpecName))</code></li>"
                    }.joined() + "</ul>\n"
            }
            let handlers = thread.nodes.sorted { $0.key < $1.key }.flatMap { node in
                node.value.failureHandlers.map { (node.key, $0) }
            }
            if !handlers.isEmpty {
                body +=
                    "<h3>Failure handlers</h3><ul>"
                    + handlers.map { node, h in
                        "<li>node <code>\(escapeHTML(node))</code>: \(escapeHTML(Self.failureCaught(h))) → handler "
                            + "ThreadSpec <code>\(escapeHTML(h.handlerSpecName))</code></li>"
                    }.joined() + "</ul>\n"
            }
            body += "</section>\n"
        }
        return dashboardPage(title: "WfSpec \(id.name)", body: body)
    }

    /// " (interrupt handler)", " (failure handler)", " (entrypoint)": how a ThreadSpec is used.
    private func role(of threadName: String, in spec: Littlehorse_WfSpec) -> String {
        if threadName == spec.entrypointThreadName { return " <span class=\"muted\">entrypoint</span>" }
        var roles: Set<String> = []
        for thread in spec.threadSpecs.values {
            if thread.interruptDefs.contains(where: { $0.handlerSpecName == threadName }) {
                roles.insert("interrupt handler")
            }
            for node in thread.nodes.values {
                if node.failureHandlers.contains(where: { $0.handlerSpecName == threadName }) {
                    roles.insert("failure handler")
                }
                if case .startThread(let s)? = node.node, s.threadSpecName == threadName {
                    roles.insert("child thread")
                }
                if case .startMultipleThreads(let s)? = node.node, s.threadSpecName == threadName {
                    roles.insert("child thread")
                }
            }
        }
        return roles.isEmpty ? "" : " <span class=\"muted\">\(roles.sorted().joined(separator: ", "))</span>"
    }

    static func failureCaught(_ h: Littlehorse_FailureHandlerDef) -> String {
        switch h.failureToCatch {
        case .specificFailure(let name): "failure \(name)"
        case .anyFailureOfType(let type): "any \(type.protoName)"
        case nil: "any failure"
        }
    }

    /// A WfRun's page; `thread` selects the thread shown in detail.
    func wfRun(id: String, thread: Int32?) async throws -> String {
        let state = try await admin.wfRunState(id)
        let spec = admin.metadata.wfSpec(state.wfRun.wfSpecID)
        return WfRunPage(state: state, spec: spec, selected: thread ?? 0, actions: actions).render()
    }
}
