import Foundation
import LHTestKit
import Testing

/// LittleHorse's own Python SDK (PyPI littlehorse-client 1.3.0, installed by
/// scripts/python-sdk.sh) against the gRPC front of a real server, TLS with
/// its development CA: the SDK registers a TaskDef and a WfSpec with an
/// interrupt, runs its own task worker, and drives a WfRun with its stub
/// (Tests/grpc/python_sdk_test.py says what is checked).
@Suite(.timeLimit(.minutes(5))) struct PythonSDKTests {
    static let root = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    /// The virtualenv's python, or nil with the reason it could not be had.
    static func python() throws -> (String?, String) {
        let process = Process()
        process.executableURL = root.appendingPathComponent("scripts/python-sdk.sh")
        let out = Pipe()
        let err = Pipe()
        process.standardOutput = out
        process.standardError = err
        try process.run()
        let path = String(decoding: out.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        let reason = String(decoding: err.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
        process.waitUntilExit()
        let python = path.trimmingCharacters(in: .whitespacesAndNewlines)
        return (process.terminationStatus == 0 && !python.isEmpty ? python : nil, reason)
    }

    @Test func littleHorsesPythonSDKRunsItsWorkerAndDrivesAWfRunWithInterrupts() async throws {
        let (python, reason) = try Self.python()
        guard let python else {
            print("SKIPPED PythonSDKTests: \(reason)")
            return
        }
        try await TestServer.with(grpc: true) { server in
            let grpcPort = try #require(server.grpcPort)
            let sdk = try LiveProcess(
                python, [Self.root.appendingPathComponent("Tests/grpc/python_sdk_test.py").path],
                environment: [
                    "LHC_API_HOST": "localhost", "LHC_API_PORT": "\(grpcPort)", "LHC_API_PROTOCOL": "TLS",
                    "LHC_CA_CERT": server.caPath ?? "", "LHW_TASK_WORKER_ID": "py-worker-1", "HOME": server.dataDir.path,
                    "PYTHONUNBUFFERED": "1",
                ], absolutePath: true)
            try await withProcesses([sdk]) {
                try await eventually("the Python SDK's checks end", timeout: 180) { !sdk.process.isRunning }
                let output = sdk.stdout.withLockedValue { $0 }
                let errors = sdk.stderr.withLockedValue { $0 }
                print(output)
                #expect(sdk.process.terminationStatus == 0, "python_sdk_test.py: \(output)\n\(errors.suffix(4000))")
                #expect(output.contains("python sdk: all checks passed"), "\(output)")
            }
        }
    }
}
