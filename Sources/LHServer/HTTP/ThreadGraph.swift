import LHProto

/// A ThreadSpec drawn as SVG: nodes in rows by their distance from the
/// entrypoint, edges as arrows (edges back up, loops, curve on the right).
/// With NodeRun statuses, each node is filled by the status of its latest
/// NodeRun; nodes never reached stay white.
struct ThreadGraph {
    static let boxWidth = 210
    static let boxHeight = 46
    static let rowGap = 34
    static let columnGap = 26
    static let margin = 16

    let spec: Littlehorse_ThreadSpec
    /// The status of each node's latest NodeRun, by node name.
    var statuses: [String: Littlehorse_LHStatus] = [:]

    /// Node names by row: breadth first from the entrypoint, in edge order;
    /// nodes no edge reaches go last, by name.
    func rows() -> [[String]] {
        let entry = spec.nodes.first { if case .entrypoint? = $0.value.node { true } else { false } }?.key
        var seen = Set<String>()
        var rows: [[String]] = []
        var current = entry.map { [$0] } ?? []
        if let entry { seen.insert(entry) }
        while !current.isEmpty {
            rows.append(current)
            var next: [String] = []
            for name in current {
                for edge in spec.nodes[name]?.outgoingEdges ?? [] where spec.nodes[edge.sinkNodeName] != nil {
                    if seen.insert(edge.sinkNodeName).inserted { next.append(edge.sinkNodeName) }
                }
            }
            current = next
        }
        let unreached = spec.nodes.keys.filter { !seen.contains($0) }.sorted()
        if !unreached.isEmpty { rows.append(unreached) }
        return rows
    }

    func svg() -> String {
        let rows = rows()
        let widest = rows.map(\.count).max() ?? 1
        let width = Self.margin * 2 + widest * Self.boxWidth + (widest - 1) * Self.columnGap + 60
        let height = Self.margin * 2 + rows.count * Self.boxHeight + max(0, rows.count - 1) * Self.rowGap
        var place: [String: (x: Int, y: Int, row: Int)] = [:]
        for (r, row) in rows.enumerated() {
            let rowWidth = row.count * Self.boxWidth + (row.count - 1) * Self.columnGap
            let left = (width - 60 - rowWidth) / 2
            for (c, name) in row.enumerated() {
                place[name] = (
                    left + c * (Self.boxWidth + Self.columnGap), Self.margin + r * (Self.boxHeight + Self.rowGap), r
                )
            }
        }
        var out = """
            <svg class="graph" xmlns="http://www.w3.org/2000/svg" width="\(width)" height="\(height)" \
            viewBox="0 0 \(width) \(height)" role="img" aria-label="thread graph">
            <defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" \
            orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="#555"/></marker></defs>

            """
        for name in spec.nodes.keys.sorted() {
            guard let from = place[name] else { continue }
            for edge in spec.nodes[name]!.outgoingEdges {
                guard let to = place[edge.sinkNodeName] else { continue }
                out += edgePath(
                    from: from, to: to, sink: edge.sinkNodeName, source: name, conditional: edge.edgeCondition != nil)
            }
        }
        for name in spec.nodes.keys.sorted() {
            guard let p = place[name], let node = spec.nodes[name] else { continue }
            let status = statuses[name]
            let fill = status.map(Self.color) ?? "#ffffff"
            let statusName = status?.protoName ?? "NOT_REACHED"
            let label = Self.clip(name, 30)
            let subtitle = Self.clip(Self.typeName(node) + (status == nil ? "" : " · \(statusName)"), 36)
            out += """
                <g class="node" data-node="\(html: name)" data-type="\(Self.typeName(node))" data-status="\(statusName)">\
                <title>\(html: name) (\(Self.typeName(node)))\(status == nil ? "" : ": \(statusName)")</title>\
                <rect x="\(p.x)" y="\(p.y)" width="\(Self.boxWidth)" height="\(Self.boxHeight)" rx="7" fill="\(fill)" \
                stroke="#444"/>\
                <text x="\(p.x + Self.boxWidth / 2)" y="\(p.y + 19)" text-anchor="middle" font-size="12">\(html: label)</text>\
                <text x="\(p.x + Self.boxWidth / 2)" y="\(p.y + 36)" text-anchor="middle" font-size="10" fill="#333">\
                \(html: subtitle)</text></g>

                """
        }
        return out + "</svg>"
    }

    private func edgePath(
        from: (x: Int, y: Int, row: Int), to: (x: Int, y: Int, row: Int), sink: String, source: String,
        conditional: Bool
    ) -> String {
        let dash = conditional ? " stroke-dasharray=\"5 3\"" : ""
        let attributes = "class=\"edge\" data-from=\"\(escapeHTML(source))\" data-to=\"\(escapeHTML(sink))\""
        if to.row > from.row {
            let (x1, y1) = (from.x + Self.boxWidth / 2, from.y + Self.boxHeight)
            let (x2, y2) = (to.x + Self.boxWidth / 2, to.y)
            return "<line \(attributes) x1=\"\(x1)\" y1=\"\(y1)\" x2=\"\(x2)\" y2=\"\(y2)\" stroke=\"#555\"\(dash) "
                + "marker-end=\"url(#arrow)\"/>\n"
        }
        // Back or sideways: around the right of both boxes.
        let (x1, y1) = (from.x + Self.boxWidth, from.y + Self.boxHeight / 2)
        let (x2, y2) = (to.x + Self.boxWidth, to.y + Self.boxHeight / 2)
        let bend = max(x1, x2) + 40
        return "<path \(attributes) d=\"M\(x1),\(y1) C\(bend),\(y1) \(bend),\(y2) \(x2),\(y2)\" fill=\"none\" "
            + "stroke=\"#555\"\(dash) marker-end=\"url(#arrow)\"/>\n"
    }

    static func clip(_ text: String, _ length: Int) -> String {
        text.count > length ? String(text.prefix(length - 1)) + "…" : text
    }

    static func color(_ status: Littlehorse_LHStatus) -> String {
        switch status {
        case .completed: "#b7e4c7"
        case .running, .starting: "#a9d6f5"
        case .halting: "#ffd28a"
        case .halted: "#f9e79f"
        case .error: "#f5a3a3"
        case .exception: "#d7b4f3"
        default: "#dddddd"
        }
    }

    static func typeName(_ node: Littlehorse_Node) -> String {
        switch node.node {
        case .entrypoint: "ENTRYPOINT"
        case .exit: "EXIT"
        case .task(let t): "TASK \(t.taskDefID.name)"
        case .externalEvent(let e): "EXTERNAL_EVENT \(e.externalEventDefID.name)"
        case .startThread(let s): "START_THREAD \(s.threadSpecName)"
        case .waitForThreads: "WAIT_FOR_THREADS"
        case .nop: "NOP"
        case .sleep: "SLEEP"
        case .userTask: "USER_TASK"
        case .startMultipleThreads(let s): "START_MULTIPLE_THREADS \(s.threadSpecName)"
        case .throwEvent: "THROW_EVENT"
        case .waitForCondition: "WAIT_FOR_CONDITION"
        case nil: "UNKNOWN"
        }
    }
}
