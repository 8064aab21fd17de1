import Foundation
import Testing

/// The fuzz targets' seed corpora and committed regressions
/// (Fuzz/regressions/TARGET), replayed through the ordinary build of
/// lh-fuzz: every input must run to its end. The fuzzing itself
/// (libFuzzer, scripts/fuzz.sh) runs as a short smoke in .ci/run.
@Suite(.serialized) struct FuzzReplayTests {
    static let repository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
        .deletingLastPathComponent()

    @Test(arguments: ["frame", "wfspec", "requests"])
    func seedsAndRegressionsRunToTheirEnd(target: String) async throws {
        let fuzz = ServerProcess.binDir.appendingPathComponent("lh-fuzz").path
        let seeds = try ServerProcess.temporaryDirectory("lh-fuzz-seeds")
        defer { try? FileManager.default.removeItem(at: seeds) }
        let made = try await runTool(fuzz, ["seeds", target, seeds.path], environment: [:])
        #expect(made.status == 0, "lh-fuzz seeds \(target): \(made.stderr)")
        let count = try FileManager.default.contentsOfDirectory(atPath: seeds.path).count
        #expect(count >= 2, "\(target) has a seed corpus")
        var inputs = [seeds.path]
        let regressions = Self.repository.appendingPathComponent("Fuzz/regressions/\(target)")
        if FileManager.default.fileExists(atPath: regressions.path) { inputs.append(regressions.path) }
        let replay = try await runTool(fuzz, ["replay", target] + inputs, environment: [:])
        #expect(replay.status == 0, "lh-fuzz replay \(target) exited \(replay.status): \(replay.stderr)")
        #expect(replay.stdout.contains("none crashed"))
    }
}
