import Foundation
import LHProto
import SwiftProtobuf

/// Text made safe inside HTML, attributes included.
func escapeHTML(_ text: String) -> String {
    // Most names and values need nothing: no copy for them.
    guard text.utf8.contains(where: { $0 == 38 || $0 == 60 || $0 == 62 || $0 == 34 || $0 == 39 }) else { return text }
    var out = ""
    out.reserveCapacity(text.utf8.count)
    for c in text.unicodeScalars {
        switch c {
        case "&": out += "&amp;"
        case "<": out += "&lt;"
        case ">": out += "&gt;"
        case "\"": out += "&quot;"
        case "'": out += "&#39;"
        default: out.unicodeScalars.append(c)
        }
    }
    return out
}

/// A path segment or query value, percent-encoded.
func escapeURL(_ text: String) -> String {
    var allowed = CharacterSet.alphanumerics
    allowed.insert(charactersIn: "-._~")
    return text.addingPercentEncoding(withAllowedCharacters: allowed) ?? text
}

extension DefaultStringInterpolation {
    /// `"\(html: text)"`: the text escaped for HTML.
    mutating func appendInterpolation(html text: String) {
        appendLiteral(escapeHTML(text))
    }

    /// `"\(url: text)"`: the text percent-encoded for a URL.
    mutating func appendInterpolation(url text: String) {
        appendLiteral(escapeURL(text))
    }
}

/// The page frame every dashboard page shares: no script, no CDN, one
/// small style sheet inline. `refresh`: seconds after which the browser
/// loads the page again (a running WfRun).
func dashboardPage(title: String, refresh: Int? = nil, body: String) -> String {
    let meta = refresh.map { "<meta http-equiv=\"refresh\" content=\"\($0)\">" } ?? ""
    return """
        <!doctype html>
        <html lang="en"><head><meta charset="utf-8">\(meta)
        <title>\(html: title) · lh-server</title>
        <style>\(dashboardStyle)</style></head>
        <body><header><a href="/" class="home">lh-server</a> <span class="sub">dashboard</span>
        <form class="search" action="/wfRuns" method="get"><input name="wfSpec" placeholder="WfSpec name">
        <button>Search WfRuns</button></form></header>
        <main>
        \(body)
        </main></body></html>
        """
}

private let dashboardStyle = """
    body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
    header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:12px;align-items:center}
    header a.home{color:#fff;font-weight:700;text-decoration:none;font-size:18px}
    header .sub{color:#aab}
    header form.search{margin-left:auto}
    main{padding:16px 24px}
    h1{font-size:22px;margin:6px 0 12px} h2{font-size:17px;margin:22px 0 8px} h3{font-size:15px;margin:14px 0 6px}
    table{border-collapse:collapse;background:#fff;margin:4px 0 12px;font-size:13px}
    th,td{border:1px solid #d8dbe2;padding:4px 8px;text-align:left;vertical-align:top}
    th{background:#eceef3}
    .status{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;background:#ddd}
    .status.COMPLETED{background:#b7e4c7}.status.RUNNING,.status.STARTING{background:#a9d6f5}
    .status.HALTING{background:#ffd28a}.status.HALTED{background:#f9e79f}
    .status.ERROR{background:#f5a3a3}.status.EXCEPTION{background:#d7b4f3}
    .box{background:#fff;border:1px solid #d8dbe2;border-radius:6px;padding:10px 14px;margin:8px 0}
    ul.tree{list-style:none;padding-left:18px;margin:4px 0} ul.tree li{margin:3px 0}
    .reason{color:#8a4b00;font-size:13px;margin-left:6px} .muted{color:#667;font-size:12px}
    .graph{background:#fff;border:1px solid #d8dbe2;border-radius:6px}
    code,pre{font-family:ui-monospace,Menlo,monospace;font-size:12px} pre{white-space:pre-wrap;margin:0}
    a{color:#1f5fbf} .selected{font-weight:700}
    form.inline{display:inline-block;margin-right:8px}
    """

extension Google_Protobuf_Timestamp {
    /// ISO 8601 with milliseconds, UTC (`2026-12-02T19:29:36.116Z`); empty
    /// when unset. Formatted by hand: a page of a big WfRun shows thousands,
    /// and making a date formatter for each cost ~0.1 ms.
    var shown: String {
        guard seconds != 0 || nanos != 0 else { return "" }
        var t = time_t(seconds)
        var parts = tm()
        gmtime_r(&t, &parts)
        func pad(_ n: Int32, _ width: Int) -> String {
            let digits = String(n)
            return digits.count >= width ? digits : String(repeating: "0", count: width - digits.count) + digits
        }
        return pad(parts.tm_year + 1900, 4) + "-" + pad(parts.tm_mon + 1, 2) + "-" + pad(parts.tm_mday, 2) + "T"
            + pad(parts.tm_hour, 2) + ":" + pad(parts.tm_min, 2) + ":" + pad(parts.tm_sec, 2) + "."
            + pad(nanos / 1_000_000, 3) + "Z"
    }
}

/// A value as one line of text (JSON values as their JSON).
func shownValue(_ value: Littlehorse_VariableValue) -> String {
    switch value.value {
    case .str(let s): return "\"\(s)\""
    case .int(let i): return "\(i)"
    case .double(let d): return "\(d)"
    case .bool(let b): return "\(b)"
    case .jsonObj(let j), .jsonArr(let j): return j
    case .bytes(let b): return "\(b.count) bytes"
    case nil: return "null"
    default: return (try? value.jsonString()) ?? "?"
    }
}
