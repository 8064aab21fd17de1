import Foundation
import LHProto
import LHWire
import LHWireProto
import LHWorkflow
import SwiftProtobuf

/// Seed corpora: valid inputs the fuzzer starts from and mutates (made
/// here, from our own builders, so that nothing binary is committed).
enum Seeds {
    static func write(_ target: FuzzTarget, to dir: URL) throws {
        try FileManager.default.createDirectory(at: dir, withIntermediateDirectories: true)
        let seeds: [(String, [UInt8])]
        switch target {
        case .frame: seeds = frames()
        case .wfspec: seeds = try workflows().map { ($0.0, try $0.1.serializedBytes()) }
        case .requests: seeds = try requests()
        }
        for (name, bytes) in seeds {
            try Data(bytes).write(to: dir.appendingPathComponent("seed-\(name)"))
        }
    }

    static func workflows() throws -> [(String, Littlehorse_PutWfSpecRequest)] {
        let underpants = Workflow("collect-underpants") { wf in
            let all = wf.declareJsonArr("all-underpants")
            wf.execute("t")
            wf.waitForEvent("go")
            wf.execute("u", all)
            wf.registerInterruptHandler("underpant-collected") { h in
                let input = h.declareStr(WorkflowThread.handlerInputVar)
                h.mutate(all, .add, input)
                h.execute("collect-underpant", input)
            }
        }
        let everything = Workflow("everything") { wf in
            let count = wf.declareInt("count")
            let name = wf.declareStr("name")
            let step = wf.execute("u", "x", options: TaskOptions(retries: 2, timeoutSeconds: 5))
            wf.handleError(step) { h in h.execute("t") }
            wf.mutate(name, .assign, step)
            wf.sleepSeconds(2)
            wf.doIf(wf.condition(count, .lessThan, 3)) { t in t.mutate(count, .add, 1) }
            wf.doWhile(wf.condition(count, .lessThan, 5)) { t in t.mutate(count, .add, 1) }
            let child = wf.spawnThread("child") { c in
                c.execute("u", "child")
                c.waitForEvent("e", timeoutSeconds: 3)
            }
            wf.waitForThreads(child)
            wf.registerInterruptHandler("e") { h in h.fail("stop-it", "an interrupt handler that fails") }
            wf.execute("u", name, options: TaskOptions(exponentialBackoff: (100, 2, 1000)))
        }
        return [("collect-underpants", underpants.compile()), ("everything", everything.compile())]
    }

    static func frames() -> [(String, [UInt8])] {
        var out: [(String, [UInt8])] = []
        var hello = Lhwire_Hello()
        hello.protocolVersion = LHProtocol.version
        hello.clientID = "seed"
        var all: [UInt8] = []
        for (i, envelope) in envelopes().enumerated() {
            var one: [UInt8] = []
            RequestTarget.frame(envelope, into: &one)
            out.append(("frame-\(i)", one))
            all += one
        }
        out.append(("all", all))
        out.append(("truncated", Array(all.prefix(all.count / 2))))
        out.append(("tls-hello", [22, 3, 1, 0, 200, 1, 0, 0, 196, 3, 3]))
        return out
    }

    /// One of every kind of request a client or worker sends.
    static func envelopes() -> [Lhwire_Envelope] {
        var hello = Lhwire_Hello()
        hello.protocolVersion = LHProtocol.version
        hello.clientID = "seed"
        let spec = (try? workflows().first?.1) ?? .init()
        var run = Littlehorse_RunWfRequest()
        run.wfSpecName = "collect-underpants"
        run.id = "seed-run"
        var event = Littlehorse_PutExternalEventRequest()
        event.wfRunID.id = "seed-run"
        event.externalEventDefID.name = "underpant-collected"
        event.guid = "g1"
        event.content.str = "obiwan"
        var subscribe = Lhwire_Subscribe()
        subscribe.taskDefID.name = "t"
        subscribe.taskWorkerID = "seed-worker"
        subscribe.capacity = 2
        subscribe.held = [
            .with {
                $0.taskRunID.wfRunID.id = "seed-run"; $0.taskRunID.taskGuid = "g"; $0.attemptNumber = 0
            }
        ]
        var report = Littlehorse_ReportTaskRun()
        report.taskRunID.wfRunID.id = "seed-run"
        report.taskRunID.taskGuid = "g"
        report.status = .taskSuccess
        report.output.str = "done"
        let kinds: [Lhwire_Envelope.OneOf_Kind] = [
            .putTaskDef(
                .with {
                    $0.name = "t"
                }),
            .putTaskDef(
                .with {
                    $0.name = "u";
                    $0.inputVars = [
                        .with {
                            $0.name = "input"; $0.typeDef.primitiveType = .str
                        }
                    ]
                }),
            .putExternalEventDef(.with { $0.name = "go" }),
            .putExternalEventDef(.with { $0.name = "underpant-collected" }),
            .putWfSpec(spec),
            .runWf(run),
            .putExternalEvent(event),
            .getWfRun(.with { $0.id = "seed-run" }),
            .stopWfRun(.with { $0.wfRunID.id = "seed-run" }),
            .resumeWfRun(.with { $0.wfRunID.id = "seed-run" }),
            .listTaskRuns(.with { $0.wfRunID.id = "seed-run" }),
            .searchWfRun(.with { $0.wfSpecName = "collect-underpants" }),
            .subscribe(subscribe),
            .reportTask(report),
            .heartbeat(.init()),
            .deleteWfRun(.with { $0.id.id = "seed-run" }),
        ]
        return [Lhwire_Envelope(id: 1, .hello(hello))]
            + kinds.enumerated().map { Lhwire_Envelope(id: UInt64($0 + 2), $1) }
    }

    /// Inputs of the requests target: a mode byte, then records.
    static func requests() throws -> [(String, [UInt8])] {
        let all = envelopes().dropFirst()  // the target sends its own hello
        func records(_ list: [Lhwire_Envelope]) throws -> [UInt8] {
            var out: [UInt8] = []
            for e in list {
                let body: [UInt8] = try e.serializedBytes()
                out += [UInt8(body.count >> 8 & 0xff), UInt8(body.count & 0xff)] + body
            }
            return out
        }
        let admin = all.filter {
            if case .subscribe = $0.kind { false } else if case .reportTask = $0.kind { false } else { true }
        }
        let worker = all.filter {
            if case .subscribe = $0.kind { true } else if case .reportTask = $0.kind { true } else { false }
        }
        var out: [(String, [UInt8])] = [
            ("admin", [0] + (try records(Array(admin)))),
            ("worker", [1] + (try records(Array(worker)))),
        ]
        for (i, e) in all.enumerated() { out.append(("one-\(i)", [0] + (try records([e])))) }
        var raw: [UInt8] = []
        for e in all { RequestTarget.frame(e, into: &raw) }
        out.append(("raw", [2] + raw))
        return out
    }
}
