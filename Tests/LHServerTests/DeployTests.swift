import Foundation
import LHClient
import LHWire
import Testing

/// deploy/docker-compose.yml cannot run here (no Docker engine), so its
/// services' entrypoints run as local processes with the environment the
/// compose file gives them: a wrong variable name or path fails here. Only
/// what a container changes is mapped: `/data` to a temporary directory,
/// the `lh-server` host to 127.0.0.1, the port to a free one.
@Suite(.timeLimit(.minutes(3))) struct DeployTests {
    /// `environment:` maps and `entrypoint:` of each service, read from the compose file.
    static func composeServices() throws -> [String: (env: [String: String], entrypoint: String?)] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent()
            .appendingPathComponent("deploy/docker-compose.yml")
        let lines = try String(contentsOf: url, encoding: .utf8).split(
            separator: "\n", omittingEmptySubsequences: false
        ).map(String.init)
        var services: [String: (env: [String: String], entrypoint: String?)] = [:]
        var inServices = false
        var service: String?
        var inEnv = false
        func indent(_ l: String) -> Int { l.prefix { $0 == " " }.count }
        for line in lines
        where !line.trimmingCharacters(in: .whitespaces).hasPrefix("#")
            && !line.trimmingCharacters(in: .whitespaces).isEmpty
        {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            switch indent(line) {
            case 0:
                inServices = trimmed == "services:"
                service = nil
            case 2 where inServices:
                service = String(trimmed.dropLast())
                services[service!] = ([:], nil)
                inEnv = false
            case 4 where service != nil:
                inEnv = trimmed == "environment:"
                if trimmed.hasPrefix("entrypoint:"), let open = trimmed.firstIndex(of: "\""),
                    let close = trimmed[trimmed.index(after: open)...].firstIndex(of: "\"")
                {
                    services[service!]!.entrypoint = String(trimmed[trimmed.index(after: open)..<close])
                }
            case 6 where inEnv && service != nil:
                let parts = trimmed.split(separator: ":", maxSplits: 1).map { $0.trimmingCharacters(in: .whitespaces) }
                if parts.count == 2 {
                    services[service!]!.env[parts[0]] = parts[1].trimmingCharacters(
                        in: CharacterSet(charactersIn: "\""))
                }
            default:
                break
            }
        }
        return services
    }

    @Test func composeEntrypointsRunTheWalkthroughWithTheComposeEnvironment() async throws {
        let services = try Self.composeServices()
        let server = try #require(services["lh-server"])
        let worker = try #require(services["worker"])
        let register = try #require(services["register"])
        let data = try ServerProcess.temporaryDirectory("compose-data")
        let port = try ServerProcess.freePort()
        func local(_ env: [String: String]) -> [String: String] {
            var out: [String: String] = ["HOME": data.path]
            for (k, v) in env {
                var value = v.replacingOccurrences(of: "/data", with: data.path)
                if k == "LHC_API_HOST" && (value == "lh-server" || value == "localhost") { value = "127.0.0.1" }
                if k == "LHC_API_PORT" { value = "\(port)" }
                if k == "LHS_LISTEN" { value = "127.0.0.1:\(port)" }
                if k == "LHS_GRPC_LISTEN" || k == "LHS_HTTP_LISTEN" { value = "127.0.0.1:0" }
                out[k] = value
            }
            return out
        }
        // Every name the compose file sets is one the programs read.
        for (name, s) in services {
            for key in s.env.keys {
                #expect(
                    key.hasPrefix("LHC_") || key.hasPrefix("LHW_") || key.hasPrefix("LHS_"),
                    "service \(name) sets \(key)")
            }
        }
        let serverProcess = try LiveProcess("lh-server", [], environment: local(server.env))
        try await withProcesses([serverProcess]) {
            try await serverProcess.waitFor("lh-server listening on 127.0.0.1:\(port)")
            // LHS_GRPC_LISTEN: LittleHorse's gRPC service beside ours.
            try await serverProcess.waitFor("lh-server gRPC (LittleHorse's service) listening on 127.0.0.1:")
            // LHS_HTTP_LISTEN: the dashboard, HTTPS with the same CA.
            try await serverProcess.waitFor("lh-server dashboard at https://127.0.0.1:")
            #expect(
                FileManager.default.fileExists(atPath: data.appendingPathComponent("tls/ca.pem").path),
                "LHS_DATA_DIR was used")
            // As in compose, the register and the worker start together (the
            // register first here): it waits for the worker's TaskDefs.
            let reg = try LiveProcess(
                register.entrypoint ?? "collect-underpants-register", [], environment: local(register.env))
            let workerProcess = try LiveProcess("collect-underpants-worker", [], environment: local(worker.env))
            try await withProcesses([workerProcess, reg]) {
                try await workerProcess.waitFor("workers ready")
                try await reg.waitFor("registered WfSpec collect-underpants")
                reg.stop()
                var config = LHConfig(clientId: "compose-test")
                config.apiHost = "127.0.0.1"
                config.apiPort = port
                config.caCertPath = data.appendingPathComponent("tls/ca.pem").path
                let client = try await LittleHorseClient.connect(config)
                _ = try await client.runWf(
                    .with {
                        $0.wfSpecName = "collect-underpants"; $0.id = "my-wf";
                        $0.variables["all-underpants"] = .with { $0.jsonArr = "[]" }
                    })
                for who in ["obiwan", "anakin", "yoda"] {
                    _ = try await client.putExternalEvent(
                        .with {
                            $0.wfRunID.id = "my-wf"; $0.externalEventDefID.name = "underpant-collected";
                            $0.content.str = who
                        })
                }
                try await eventually("three handlers done") {
                    try await client.getWfRun("my-wf").threadRuns.filter {
                        $0.type == .interrupt && $0.status == .completed
                    }.count == 3
                }
                _ = try await client.putExternalEvent(
                    .with {
                        $0.wfRunID.id = "my-wf"; $0.externalEventDefID.name = "done-collecting-underpants";
                        $0.content.str = "done!"
                    })
                try await eventually("my-wf COMPLETED") { try await client.getWfRun("my-wf").status == .completed }
                await client.close()
            }
        }
    }
}
