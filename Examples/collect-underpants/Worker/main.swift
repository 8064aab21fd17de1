// The task workers of seed 003's "collect underpants" walkthrough, as one
// process. Settings come from LittleHorse's LHC_* / LHW_* variables.
import Foundation
import LHWorker
import Logging
import ServiceLifecycle

/// A setting or the server is wrong: one line on stderr, not a crash.
func fail(_ error: any Error) -> Never {
    FileHandle.standardError.write(Data("collect-underpants-worker: \(error)\n".utf8))
    exit(1)
}

let config: LHConfig
do { config = try LHConfig.fromEnvironment() } catch { fail(error) }

let startCollect = LHTaskWorker(config: config, taskDefName: "start-underpants-collection") { () async throws -> Void in
    print("Starting collection of underpants!")
}

let collectPant = LHTaskWorker(config: config, taskDefName: "collect-underpant", inputs: ["owner"]) {
    (owner: String) async throws -> String in
    let result = "Successfully collected underpant from \(owner)"
    print(result)
    return result
}

let profit = LHTaskWorker(config: config, taskDefName: "profit", inputs: ["underpants"]) {
    (context: WorkerContext, underpants: [String]) async throws -> String in
    let result = "Collected \(underpants.count) underpants!"
    context.log("underpants: \(underpants.joined(separator: ", "))")
    print(result)
    return result
}

let workers = [startCollect, collectPant, profit]
do {
    for worker in workers {
        try await worker.registerTaskDef()
    }
    FileHandle.standardOutput.write(Data("collect-underpants workers ready\n".utf8))

    let group = ServiceGroup(
        configuration: .init(
            services: workers.map { .init(service: $0) },
            gracefulShutdownSignals: [.sigterm, .sigint],
            logger: Logger(label: "collect-underpants-worker")
        ))
    try await group.run()
} catch {
    fail(error)
}
