// A task worker for the live tests: each task named on the command line
// behaves as its name says. Settings from LHC_* / LHW_* variables.
//
//   lh-test-worker TASKDEF:BEHAVIOUR ...
//
// Behaviours (each task takes one STR input and returns a STR):
//   echo          returns "echo:<input>"
//   gate          prints "gate: <wfRunId> waiting", waits until the file
//                 $LH_TEST_GATE_DIR/<wfRunId> exists, then echoes
//   fail          throws an ordinary error (TASK_FAILED)
//   exception     throws LHTaskException("test-exception")
//   slow-echo     sleeps 300 ms, then echoes
//   hang          never returns (until the process is killed)
//
// LH_TEST_EXEC_LOG=FILE: each task appends "start WFRUN GUID ATTEMPT WORKER"
// when it begins (one write with O_APPEND: lines of several workers do not mix).
import Foundation
import LHWorker
import Logging
import ServiceLifecycle

let config = try LHConfig.fromEnvironment()
let gateDir = ProcessInfo.processInfo.environment["LH_TEST_GATE_DIR"] ?? "/tmp"
let execLog: Int32? = ProcessInfo.processInfo.environment["LH_TEST_EXEC_LOG"].map {
    open($0, O_WRONLY | O_APPEND | O_CREAT, 0o644)
}
var workers: [LHTaskWorker] = []
for spec in CommandLine.arguments.dropFirst() {
    let parts = spec.split(separator: ":").map(String.init)
    guard parts.count == 2 else { fatalError("expected TASKDEF:BEHAVIOUR, got \(spec)") }
    let behaviour = parts[1]
    workers.append(
        LHTaskWorker(config: config, taskDefName: parts[0], inputs: ["input"]) {
            (context: WorkerContext, input: String) async throws -> String in
            if let execLog {
                let line =
                    "start \(context.wfRunId) \(context.taskRunId.taskGuid) \(context.attemptNumber) \(config.taskWorkerId)\n"
                _ = line.withCString { write(execLog, $0, strlen($0)) }
            }
            switch behaviour {
            case "gate":
                let path = "\(gateDir)/\(context.wfRunId)"
                FileHandle.standardOutput.write(Data("gate: \(context.wfRunId) waiting\n".utf8))
                while !FileManager.default.fileExists(atPath: path) { try await Task.sleep(for: .milliseconds(20)) }
            case "fail":
                struct Boom: Error {}
                throw Boom()
            case "exception":
                throw LHTaskException(
                    name: "test-exception", message: "thrown on purpose by \(parts[0])", content: input)
            case "slow-echo":
                try await Task.sleep(for: .milliseconds(300))
            case "hang":
                try await Task.sleep(for: .seconds(3600))
            default:
                break
            }
            return "echo:\(input)"
        })
}
for worker in workers { try await worker.registerTaskDef() }
FileHandle.standardOutput.write(Data("test worker ready\n".utf8))
let group = ServiceGroup(
    configuration: .init(
        services: workers.map { .init(service: $0) }, gracefulShutdownSignals: [.sigterm, .sigint],
        logger: Logger(label: "lh-test-worker")))
try await group.run()
