import LHProto
import LHWire
import Testing

@testable import LHServer

/// PutWfSpec's versioning rules (``WfSpecVersioning``).
@Suite struct WfSpecVersioningTests {
    /// A spec whose entrypoint declares `variables` and runs `task`.
    static func spec(_ variables: [String], task: String = "greet", version: (Int32, Int32)? = nil)
        -> Littlehorse_WfSpec
    {
        var s = Littlehorse_WfSpec()
        s.id.name = "wf"
        if let version { (s.id.majorVersion, s.id.revision) = version }
        s.entrypointThreadName = "entrypoint"
        s.threadSpecs["entrypoint"] = .with { t in
            t.variableDefs = variables.map { name in
                .with {
                    $0.varDef.name = name; $0.varDef.type = .str
                }
            }
            t.nodes["1-\(task)-TASK"] = .with { $0.task.taskDefID.name = task }
        }
        return s
    }

    static func decide(
        _ spec: Littlehorse_WfSpec, _ allowed: Littlehorse_AllowedUpdateType = .allUpdates,
        over versions: [Littlehorse_WfSpec]
    ) throws -> WfSpecVersioning.Decision {
        try WfSpecVersioning.decide(spec, allowedUpdates: allowed, versions: versions)
    }

    static func id(_ major: Int32, _ revision: Int32) -> Littlehorse_WfSpecId {
        .with {
            $0.name = "wf"; $0.majorVersion = major; $0.revision = revision
        }
    }

    @Test func theFirstPutIsVersionZeroPointZero() throws {
        #expect(try Self.decide(Self.spec(["a"]), over: []) == .new(Self.id(0, 0)))
        #expect(try Self.decide(Self.spec(["a"]), .noUpdates, over: []) == .new(Self.id(0, 0)))
    }

    @Test func anIdenticalSpecIsTheLatestVersionWhateverAllowedUpdatesSays() throws {
        let stored = Self.spec(["a"], version: (1, 3))
        for allowed in [Littlehorse_AllowedUpdateType.allUpdates, .minorRevisionUpdates, .noUpdates] {
            #expect(
                try Self.decide(Self.spec(["a"]), allowed, over: [Self.spec(["a"], version: (0, 0)), stored])
                    == .existing(stored))
        }
    }

    @Test func aChangedLogicWithTheSameVariablesIsANewRevision() throws {
        let versions = [Self.spec(["a"], version: (0, 0)), Self.spec(["a"], task: "other", version: (0, 1))]
        #expect(try Self.decide(Self.spec(["a"], task: "third"), over: versions) == .new(Self.id(0, 2)))
        #expect(
            try Self.decide(Self.spec(["a"], task: "third"), .minorRevisionUpdates, over: versions)
                == .new(Self.id(0, 2)))
    }

    @Test func changedEntrypointVariablesAreANewMajorVersionAtRevisionZero() throws {
        let versions = [Self.spec(["a"], version: (2, 0)), Self.spec(["a"], task: "other", version: (2, 5))]
        #expect(try Self.decide(Self.spec(["a", "b"]), over: versions) == .new(Self.id(3, 0)))
        #expect(try Self.decide(Self.spec([]), over: versions) == .new(Self.id(3, 0)))
    }

    @Test func minorRevisionUpdatesRefusesANewMajorVersion() {
        #expect(throws: LHError.self) {
            try Self.decide(Self.spec(["b"]), .minorRevisionUpdates, over: [Self.spec(["a"], version: (0, 0))])
        }
        do {
            _ = try Self.decide(Self.spec(["b"]), .minorRevisionUpdates, over: [Self.spec(["a"], version: (0, 0))])
        } catch let e as LHError {
            #expect(e.code == .failedPrecondition && e.message.contains("MINOR_REVISION_UPDATES"))
        } catch {
            Issue.record("unexpected \(error)")
        }
    }

    @Test func noUpdatesRefusesAnyNewVersionOfAnExistingSpec() {
        for changed in [Self.spec(["a"], task: "other"), Self.spec(["b"])] {
            do {
                _ = try Self.decide(changed, .noUpdates, over: [Self.spec(["a"], version: (0, 0))])
                Issue.record("a new version was allowed under NO_UPDATES")
            } catch let e as LHError {
                #expect(e.code == .failedPrecondition && e.message.contains("NO_UPDATES"))
            } catch {
                Issue.record("unexpected \(error)")
            }
        }
    }
}
