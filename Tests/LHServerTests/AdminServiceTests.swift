import Foundation
import LHEngine
import LHProto
import LHStore
import LHWire
import LHWorkflow
import Logging
import Testing

@testable import LHServer

/// The admin rules through ``AdminService`` on a real store, in this process,
/// with no connection: metadata idempotency, versioning as stored, orphan
/// events, delete.
@Suite struct AdminServiceTests {
    static func service() async throws -> (AdminService, SQLiteStore) {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent(
            "lh-admin-\(UUID().uuidString.prefix(8))")
        let store = try SQLiteStore(directory: dir)
        let core = try await LHCore(store: store, logger: Logger(label: "test"))
        return (core.admin, store)
    }

    static func code(of body: () async throws -> Void) async -> LHError.Code? {
        do {
            try await body()
            return nil
        } catch let e as LHError {
            return e.code
        } catch {
            return .unknown
        }
    }

    @Test func puttingTheSameTaskDefAgainAnswersTheStoredOneAndOtherInputsAreRefused() async throws {
        let (service, store) = try await Self.service()
        let put = Littlehorse_PutTaskDefRequest.with {
            $0.name = "greet"
            $0.inputVars = [
                .with {
                    $0.name = "who"; $0.type = .str
                }
            ]
        }
        let first = try await service.putTaskDef(put)
        #expect(try await service.putTaskDef(put) == first)
        var other = put
        other.inputVars[0].type = .int
        #expect(await Self.code { _ = try await service.putTaskDef(other) } == .alreadyExists)
        #expect(try store.taskDefs() == [first])
        #expect(
            await Self.code { _ = try await service.putTaskDef(.with { $0.name = "Not_Kebab" }) } == .invalidArgument)
    }

    @Test func puttingTheSameExternalEventDefAgainAnswersTheStoredOne() async throws {
        let (service, store) = try await Self.service()
        let first = try await service.putExternalEventDef(.with { $0.name = "ping" })
        #expect(try await service.putExternalEventDef(.with { $0.name = "ping" }) == first)
        #expect(try store.externalEventDefs().count == 1)
        #expect(try service.externalEventDef("ping") == first)
        #expect(await Self.code { _ = try service.externalEventDef("pong") } == .notFound)
    }

    @Test func wfSpecVersionsAreStoredAndServedAsTheRulesGiveThem() async throws {
        let (service, store) = try await Self.service()
        _ = try await service.putExternalEventDef(.with { $0.name = "go" })
        _ = try await service.putExternalEventDef(.with { $0.name = "stop" })
        func spec(_ event: String, variable: String) -> Littlehorse_PutWfSpecRequest {
            Workflow("versioned") { wf in
                _ = wf.declareStr(variable)
                wf.waitForEvent(event)
            }.compile()
        }
        #expect(try await service.putWfSpec(spec("go", variable: "a")).id.majorVersion == 0)
        #expect(try await service.putWfSpec(spec("go", variable: "a")).id.revision == 0)
        let revision = try await service.putWfSpec(spec("stop", variable: "a")).id
        #expect((revision.majorVersion, revision.revision) == (0, 1))
        let major = try await service.putWfSpec(spec("stop", variable: "b")).id
        #expect((major.majorVersion, major.revision) == (1, 0))
        var minorOnly = spec("go", variable: "c")
        minorOnly.allowedUpdates = .minorRevisionUpdates
        #expect(await Self.code { _ = try await service.putWfSpec(minorOnly) } == .failedPrecondition)
        #expect(try store.wfSpecs().count == 3)
        #expect(try service.latestWfSpec("versioned", majorVersion: nil).id == major)
        #expect(try service.latestWfSpec("versioned", majorVersion: 0).id == revision)
    }

    @Test func eventsPostedBeforeTheirWfRunExistsWaitForItAndAreItsFirstEvents() async throws {
        let (service, store) = try await Self.service()
        _ = try await service.putExternalEventDef(.with { $0.name = "go" })
        _ = try await service.putWfSpec(Workflow("waits") { $0.waitForEvent("go") }.compile())
        let post = Littlehorse_PutExternalEventRequest.with {
            $0.wfRunID.id = "early"
            $0.externalEventDefID.name = "go"
            $0.guid = "g1"
            $0.content.str = "hello"
        }
        let orphan = try await service.submit(service.putExternalEvent(post))
        // Posting it again is idempotent by guid, also before the WfRun exists.
        #expect(try await service.submit(service.putExternalEvent(post)) == orphan)
        #expect(try store.orphanEvents(of: "early").map(\.id.guid) == ["g1"])
        #expect(try await service.externalEvents(of: "early").map(\.id.guid) == ["g1"])
        let run = try await service.submit(
            service.runWf(
                .with {
                    $0.wfSpecName = "waits"; $0.id = "early"
                }))
        #expect(run.status == .completed)
        #expect(try store.orphanEvents(of: "early").isEmpty)
        #expect(try await service.externalEvents(of: "early").map(\.id.guid) == ["g1"])
        #expect(
            await Self.code {
                _ = try await service.submit(
                    service.runWf(
                        .with {
                            $0.wfSpecName = "waits"; $0.id = "early"
                        }))
            } == .alreadyExists)
    }

    @Test func deletingAWfRunRemovesItAndDeletingItAgainIsNotFound() async throws {
        let (service, store) = try await Self.service()
        _ = try await service.putExternalEventDef(.with { $0.name = "go" })
        _ = try await service.putWfSpec(Workflow("waits") { $0.waitForEvent("go") }.compile())
        _ = try await service.submit(
            service.runWf(
                .with {
                    $0.wfSpecName = "waits"; $0.id = "doomed"
                }))
        #expect(try await service.wfRun("doomed").status == .running)
        try await service.submit(service.deleteWfRun(.with { $0.id.id = "doomed" }))
        #expect(await Self.code { _ = try await service.wfRun("doomed") } == .notFound)
        #expect(try store.wfRun("doomed") == nil)
        #expect(
            await Self.code { try await service.submit(service.deleteWfRun(.with { $0.id.id = "doomed" })) }
                == .notFound)
    }
}
