import Foundation
import Hummingbird
import LHProto
import LHWireProto
import NIOCore

/// The dashboard's actions: stop, resume, post an event. Off unless the
/// operator turned them on; then each POST must be authenticated.
extension HTTPFront {
    func act(_ request: Request, id: String, _ action: String) async throws -> Response {
        guard configuration.actions else {
            return Self.refusal(
                .forbidden, "actions are off: this dashboard is read-only (start lh-server with --http-actions)")
        }
        let body = try await request.body.collect(upTo: 64 * 1024)
        let form = Self.parseForm(String(buffer: body))
        guard authorized(request, form: form) else {
            return Self.refusal(
                .unauthorized,
                "this action needs the operator token (Authorization: Bearer, or the form's token field) or a client certificate"
            )
        }
        let admin = core.admin
        let thread = Int32(form["thread"] ?? "0") ?? 0
        do {
            switch action {
            case "stop", "resume":
                let stop = action == "stop"
                let r = Littlehorse_StopWfRunRequest.with {
                    $0.wfRunID.id = id
                    $0.threadRunNumber = thread
                }
                let resume = Littlehorse_ResumeWfRunRequest.with {
                    $0.wfRunID = r.wfRunID
                    $0.threadRunNumber = thread
                }
                // Where another server owns the WfRun, it does it (forwarded,
                // as over our protocol).
                try await admin.command(stop ? .stopWfRun(r) : .resumeWfRun(resume)) { _ in () }
            case "events":
                guard let def = form["externalEventDef"], !def.isEmpty else {
                    throw LHError(.invalidArgument, "externalEventDef is empty: name the ExternalEventDef to post")
                }
                let r = Littlehorse_PutExternalEventRequest.with {
                    $0.wfRunID.id = id
                    $0.externalEventDefID.name = def
                    $0.content.str = form["content"] ?? ""
                }
                _ = try await admin.command(.putExternalEvent(r)) {
                    if case .externalEvent(let e) = $0 { e } else { nil }
                }
            default:
                return Self.refusal(.notFound, "no action '\(action)': stop, resume or events")
            }
        } catch let error as LHError {
            return Self.refusal(Self.status(of: error), error.message)
        }
        core.logger.notice(
            "dashboard action", metadata: ["lh.action": "\(action)", "lh.wfRunId": "\(id)", "lh.thread": "\(thread)"])
        var headers = HTTPFields()
        headers[.location] = "/wfRuns/\(escapeURL(id))"
        return Response(status: .seeOther, headers: headers)
    }

    /// Mutual TLS (the handshake checked the client's certificate) or the
    /// operator token.
    func authorized(_ request: Request, form: [String: String]) -> Bool {
        if usesTLS && server.clientCAPath != nil { return true }
        guard let token = configuration.token, !token.isEmpty else { return false }
        var given = form["token"]
        if let header = request.headers[.authorization], header.hasPrefix("Bearer ") {
            given = String(header.dropFirst("Bearer ".count))
        }
        guard let given else { return false }
        // Constant time in the token's length.
        let a = Array(given.utf8)
        let b = Array(token.utf8)
        var difference = a.count ^ b.count
        for i in 0..<b.count { difference |= Int((i < a.count ? a[i] : 0) ^ b[i]) }
        return difference == 0
    }

    static func refusal(_ status: HTTPResponse.Status, _ message: String) -> Response {
        html(
            dashboardPage(
                title: "Refused",
                body: "<h1>\(status.code) \(escapeHTML(status.reasonPhrase))</h1><p>\(escapeHTML(message))</p>"),
            status: status)
    }

    /// application/x-www-form-urlencoded.
    static func parseForm(_ text: String) -> [String: String] {
        var form: [String: String] = [:]
        for pair in text.split(separator: "&") {
            let parts = pair.split(separator: "=", maxSplits: 1).map {
                String($0).replacingOccurrences(of: "+", with: " ").removingPercentEncoding ?? String($0)
            }
            guard let key = parts.first, !key.isEmpty else { continue }
            form[key] = parts.count > 1 ? parts[1] : ""
        }
        return form
    }
}
