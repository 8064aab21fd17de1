import ArgumentParser
import Foundation
import LHClient

/// `lhctl`: LittleHorse's command-line client, same commands and argument
/// order. Connection settings come from `LHC_*` variables.
@main
struct LHCtl: AsyncParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "lhctl",
        abstract: "Command-line client of lh-server (settings from LHC_* variables).",
        subcommands: [
            Deploy.self, Run.self, PostEvent.self, Get.self, List.self, Search.self, Stop.self, Resume.self,
            Delete.self, Version.self,
        ]
    )
}

/// Settings shared by every command that talks to the server.
struct ConnectionOptions: ParsableArguments {
    @Option(help: "Server host (overrides LHC_API_HOST).")
    var apiHost: String?
    @Option(help: "Server port (overrides LHC_API_PORT).")
    var apiPort: Int?

    func config() throws -> LHConfig {
        var config = try LHConfig.fromEnvironment()
        if let apiHost { config.apiHost = apiHost }
        if let apiPort { config.apiPort = apiPort }
        return config
    }

    func withClient<T>(_ body: (LittleHorseClient) async throws -> T) async throws -> T {
        let config = try config()
        let client = try await LittleHorseClient.connect(config)
        do {
            let result = try await body(client)
            await client.close()
            return result
        } catch {
            await client.close()
            throw error
        }
    }
}

/// Prints errors the way users expect: on stderr, with a non-zero exit.
func fail(_ error: Error) -> Never {
    FileHandle.standardError.write(Data("lhctl: \(error)\n".utf8))
    exit(1)
}
