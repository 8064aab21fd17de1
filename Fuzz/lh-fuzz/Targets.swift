import Foundation
import LHEngine
import LHProto
import LHWire
import LHWireProto
import NIOCore
import SwiftProtobuf

// Globals of this file (not main.swift) are initialised lazily on first
// use: in a fuzzing build libFuzzer's main runs, never main.swift's code.

/// What one fuzz target does with one input. Every target must return for
/// every input; a crash, a failed precondition or a hang is a finding.
enum FuzzTarget: String, CaseIterable {
    /// Our frame decoder and envelope decoding: arbitrary bytes as they
    /// come off a connection.
    case frame
    /// WfSpec validation, then a run of every WfSpec it accepts.
    case wfspec
    /// The whole request path of a live server in this process: a
    /// connection's hello, admin requests, worker subscribes and reports.
    case requests

    func run(_ bytes: UnsafeRawBufferPointer) {
        switch self {
        case .frame: FrameTarget.run(bytes)
        case .wfspec: WfSpecTarget.run(bytes)
        case .requests: RequestTarget.shared.run(bytes)
        }
    }
}

/// The target a fuzzing build runs: `LH_FUZZ_TARGET`.
let fuzzingTarget: FuzzTarget = {
    let name = ProcessInfo.processInfo.environment["LH_FUZZ_TARGET"] ?? ""
    guard let target = FuzzTarget(rawValue: name) else {
        FileHandle.standardError.write(
            Data(
                "lh-fuzz: set LH_FUZZ_TARGET to one of \(FuzzTarget.allCases.map(\.rawValue).joined(separator: ", "))\n"
                    .utf8))
        exit(2)
    }
    return target
}()

/// libFuzzer's entry: one input.
@_cdecl("LLVMFuzzerTestOneInput")
public func lhFuzzTestOneInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> CInt {
    fuzzingTarget.run(UnsafeRawBufferPointer(start: data, count: size))
    return 0
}

/// libFuzzer calls this once before the first input: with `LH_FUZZ_SEEDS`
/// set, it writes the seed corpus there and exits.
@_cdecl("LLVMFuzzerInitialize")
public func lhFuzzInitialize(
    _ argc: UnsafeMutablePointer<CInt>?,
    _ argv: UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?
) -> CInt {
    if let dir = ProcessInfo.processInfo.environment["LH_FUZZ_SEEDS"] {
        do {
            try Seeds.write(fuzzingTarget, to: URL(fileURLWithPath: dir))
            exit(0)
        } catch {
            FileHandle.standardError.write(Data("lh-fuzz: cannot write seeds to \(dir): \(error)\n".utf8))
            exit(2)
        }
    }
    return 0
}

// MARK: - frame

enum FrameTarget {
    static let deterministic: BinaryEncodingOptions = {
        var o = BinaryEncodingOptions()
        o.useDeterministicOrdering = true
        return o
    }()

    static func run(_ bytes: UnsafeRawBufferPointer) {
        var buffer = ByteBuffer(bytes: bytes)
        var decoder = LHFrameDecoder(maxFrameBytes: 64 * 1024)
        while true {
            let envelope: Lhwire_Envelope
            do {
                guard let decoded = try decoder.decode(buffer: &buffer) else { break }
                envelope = decoded
            } catch {
                guard error is LHError else { fatalError("the frame decoder threw a non-LHError: \(error)") }
                return
            }
            // What was decoded encodes, and decodes again to the same bytes.
            do {
                var out = ByteBuffer()
                try LHFrameEncoder().encode(data: envelope, out: &out)
                var again = LHFrameDecoder(maxFrameBytes: Int(UInt32.max))
                guard let copy = try again.decode(buffer: &out) else { fatalError("an encoded frame did not decode") }
                let a: [UInt8] = try envelope.serializedBytes(options: deterministic)
                let b: [UInt8] = try copy.serializedBytes(options: deterministic)
                precondition(a == b, "an envelope changed in an encode/decode round trip")
                _ = copy.kindName
            } catch {
                fatalError("a decoded envelope did not round-trip: \(error)")
            }
        }
        do {
            _ = try decoder.decodeLast(buffer: &buffer, seenEOF: true)
        } catch {
            guard error is LHError else { fatalError("decodeLast threw a non-LHError: \(error)") }
        }
    }
}

// MARK: - wfspec

enum WfSpecTarget {
    static let taskDefs: [String: Littlehorse_TaskDef] = {
        var defs: [String: Littlehorse_TaskDef] = [:]
        for (name, inputs) in [("t", [String]()), ("u", ["input"]), ("collect-underpant", ["input"])] {
            var d = Littlehorse_TaskDef()
            d.id.name = name
            d.inputVars = inputs.map { n in
                .with {
                    $0.name = n; $0.typeDef.primitiveType = .str
                }
            }
            defs[name] = d
        }
        return defs
    }()
    static let lookup = LHMetadataLookup(taskDefs: taskDefs, externalEventDefs: ["e", "go", "underpant-collected"])
    static let start = Date(timeIntervalSince1970: 1_700_000_000)

    static func run(_ bytes: UnsafeRawBufferPointer) {
        guard let request = try? Littlehorse_PutWfSpecRequest(serializedBytes: Array(bytes)) else { return }
        let spec: Littlehorse_WfSpec
        do {
            spec = try WorkflowEngine.validate(request, metadata: lookup)
        } catch {
            guard error is LHEngineError else { fatalError("validation threw a non-LHEngineError: \(error)") }
            return
        }
        // Accepted: it must run. Tasks succeed, events arrive, timers fire,
        // for a bounded number of steps; the engine may refuse a command
        // with an LHEngineError, never crash.
        var limits = LHEngineContext.Limits()
        limits.maxThreadRuns = 200
        limits.maxNodeRunsPerCommand = 2_000
        let context = LHEngineContext(spec: spec, taskDefs: taskDefs, limits: limits)
        var now = start
        var state: WfRunState
        var effects: [LHEffect]
        do {
            (state, effects) = try WorkflowEngine.runWf(.init(), id: "fuzz", context: context, now: now)
        } catch {
            guard error is LHEngineError else { fatalError("runWf threw a non-LHEngineError: \(error)") }
            return
        }
        var queued: [(String, Int32)] = []
        var timers: [LHTimerKey: Date] = [:]
        var events = 0
        for step in 0..<40 {
            for e in effects {
                switch e {
                case .dispatchTask(let guid, _, let attempt): queued.append((guid, attempt))
                case .withdrawTask(let guid, _): queued.removeAll { $0.0 == guid }
                case .scheduleTimer(let at, let key): timers[key] = at
                case .cancelTimer(let key): timers[key] = nil
                case .wfRunTerminated: break
                }
            }
            if state.isTerminated && queued.isEmpty { return }
            let command: LHCommand
            if !queued.isEmpty {
                let (guid, attempt) = queued.removeFirst()
                do {
                    effects = try WorkflowEngine.apply(
                        .taskStarted(taskGuid: guid, attempt: attempt, workerId: "w"), to: &state, context: context,
                        now: now)
                } catch {
                    guard error is LHEngineError else { fatalError("taskStarted threw a non-LHEngineError: \(error)") }
                    effects = []
                    continue
                }
                var report = Littlehorse_ReportTaskRun()
                report.taskRunID.wfRunID.id = "fuzz"
                report.taskRunID.taskGuid = guid
                report.attemptNumber = attempt
                report.status = step % 5 == 4 ? .taskFailed : .taskSuccess
                report.output.str = "ok"
                for e in effects { if case .scheduleTimer(let at, let key) = e { timers[key] = at } }
                command = .reportTask(report)
            } else if let (key, at) = timers.min(by: { $0.value < $1.value }) {
                now = max(now, at)
                timers[key] = nil
                command = .timerFired(key)
            } else if events < 3 {
                events += 1
                var event = Littlehorse_ExternalEvent()
                event.id.wfRunID.id = "fuzz"
                event.id.externalEventDefID.name = ["e", "go", "underpant-collected"][events - 1]
                event.id.guid = "event-\(events)"
                event.content.str = "x"
                command = .putExternalEvent(event)
            } else {
                return
            }
            do {
                effects = try WorkflowEngine.apply(command, to: &state, context: context, now: now)
            } catch {
                guard error is LHEngineError else { fatalError("a command threw a non-LHEngineError: \(error)") }
                effects = []
            }
        }
    }
}
