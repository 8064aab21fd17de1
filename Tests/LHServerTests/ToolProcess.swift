import Foundation

/// Runs a program (a script's interpreter, a tool) to its end and returns its
/// exit status and output. The blocking waits run on a thread of their own,
/// never on one of the test process's concurrency threads.
func runTool(_ executable: String, _ arguments: [String], environment: [String: String]? = nil) async throws -> (
    status: Int32, stdout: String, stderr: String
) {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: executable)
    process.arguments = arguments
    if let environment { process.environment = environment }
    let (out, err) = (Pipe(), Pipe())
    process.standardOutput = out
    process.standardError = err
    try spawn(process)
    return await withCheckedContinuation { continuation in
        Thread.detachNewThread {
            let o = out.fileHandleForReading.readDataToEndOfFile()
            let e = err.fileHandleForReading.readDataToEndOfFile()
            process.waitUntilExit()
            continuation.resume(
                returning: (
                    process.terminationStatus, String(decoding: o, as: UTF8.self), String(decoding: e, as: UTF8.self)
                )
            )
        }
    }
}

/// The dashboard's test tools (Tests/dashboard/*.py).
enum DashboardTools {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    static func script(_ name: String) -> String { root.appendingPathComponent("Tests/dashboard/\(name)").path }

    /// The virtualenv's python with Selenium and prometheus-client
    /// (scripts/browser.sh installs them and Chromium); nil with the reason
    /// printed when they cannot be had: the caller skips, saying so.
    static func pythonOrSkip(_ test: String) async throws -> String? {
        let r = try await runTool(root.appendingPathComponent("scripts/browser.sh").path, [])
        let python = r.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        if r.status == 0 && !python.isEmpty { return python }
        print("SKIPPED \(test): \(r.stderr.trimmingCharacters(in: .whitespacesAndNewlines))")
        return nil
    }

    /// One request with Python's standard library (http_request.py), TLS
    /// verified against `ca`.
    static func request(
        _ method: String, _ url: String, ca: String?, form: [String] = [], headers: [String] = []
    ) async throws -> (status: Int, body: String, headers: [String: String]) {
        var args = [script("http_request.py"), method, url]
        if let ca { args += ["--ca", ca] }
        for f in form { args += ["--form", f] }
        for h in headers { args += ["--header", h] }
        let r = try await runTool("/usr/bin/env", ["python3"] + args)
        guard r.status == 0, let data = r.stdout.data(using: .utf8),
            let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw DashboardTestError("http_request.py \(method) \(url) failed (\(r.status)): \(r.stderr)")
        }
        return (
            json["status"] as? Int ?? 0, json["body"] as? String ?? "",
            (json["headers"] as? [String: String]) ?? [:]
        )
    }

    /// What browser_check.py saw on the page.
    static func browse(_ python: String, _ url: String, screenshot: String, waitText: String? = nil) async throws
        -> [String: Any]
    {
        var args = [script("browser_check.py"), url, "--screenshot", screenshot]
        if let waitText { args += ["--wait-text", waitText, "--timeout", "40"] }
        let r = try await runTool(python, args)
        guard r.status == 0, let data = r.stdout.data(using: .utf8),
            let json = try JSONSerialization.jsonObject(with: data) as? [String: Any]
        else {
            throw DashboardTestError(
                "browser_check.py \(url) failed (\(r.status)): \(r.stderr)\n\(r.stdout.prefix(3000))")
        }
        return json
    }

    /// Every sample of /metrics as the Prometheus client's parser read it.
    static func metrics(_ python: String, _ url: String, ca: String?) async throws -> (
        samples: [String: Double], contentType: String
    ) {
        var args = [script("metrics_check.py"), url]
        if let ca { args += ["--ca", ca] }
        let r = try await runTool(python, args)
        guard r.status == 0, let data = r.stdout.data(using: .utf8),
            let json = try JSONSerialization.jsonObject(with: data) as? [String: Any],
            let samples = json["samples"] as? [String: Any]
        else {
            throw DashboardTestError("metrics_check.py failed (\(r.status)): \(r.stderr)")
        }
        var values: [String: Double] = [:]
        for (k, v) in samples { values[k] = (v as? NSNumber)?.doubleValue }
        return (values, json["contentType"] as? String ?? "")
    }

    /// A directory for screenshots, kept after the test (not committed).
    static func screenshotDirectory() throws -> URL {
        let dir = root.appendingPathComponent(".build/dashboard-screenshots")
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        return dir
    }
}

struct DashboardTestError: Error, CustomStringConvertible {
    var description: String
    init(_ description: String) { self.description = description }
}
