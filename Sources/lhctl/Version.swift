import ArgumentParser
import Foundation
import LHClient
import SwiftProtobuf

struct Version: AsyncParsableCommand {
    static let configuration = CommandConfiguration(abstract: "Prints lhctl's and the server's versions.")

    @OptionGroup var connection: ConnectionOptions

    func run() async throws {
        print("lhctl version: 0.1.0")
        do {
            let v = try await connection.withClient { try await $0.serverVersion() }
            print("Server version: \(v.majorVersion).\(v.minorVersion).\(v.patchVersion)")
        } catch {
            fail(error)
        }
    }
}
