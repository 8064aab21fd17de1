import Foundation
import LHProto
import SwiftProtobuf

typealias ThreadRun = Littlehorse_ThreadRun
typealias NodeRun = Littlehorse_NodeRun
typealias HaltReason = Littlehorse_ThreadHaltReason

/// One command's worth of work on a WfRun: mutates `state`, collects
/// `effects`. Internal; ``LHEngine`` is the entry point.
struct Run {
    var state: WfRunState
    let context: LHEngineContext
    let now: Date
    var effects: [LHEffect] = []
    var nodeRunsStarted = 0

    init(state: WfRunState, context: LHEngineContext, now: Date) {
        self.state = state
        self.context = context
        self.now = now
    }

    var timestamp: Google_Protobuf_Timestamp { Google_Protobuf_Timestamp(date: now) }
    var wfRunId: Littlehorse_WfRunId { state.wfRun.id }

    // MARK: - Thread access

    func thread(_ n: Int32) -> ThreadRun { state.wfRun.threadRuns[Int(n)] }

    mutating func update(_ n: Int32, _ body: (inout ThreadRun) -> Void) {
        body(&state.wfRun.threadRuns[Int(n)])
    }

    func threadSpec(_ n: Int32) -> Littlehorse_ThreadSpec {
        context.spec.threadSpecs[thread(n).threadSpecName] ?? Littlehorse_ThreadSpec()
    }

    func children(_ n: Int32) -> [Int32] { thread(n).childThreadIds }

    func nodeRunKey(_ n: Int32) -> NodeRunKey { NodeRunKey(thread: n, position: thread(n).currentNodePosition) }

    func currentNode(_ n: Int32) -> NodeRun? { state.nodeRuns[nodeRunKey(n)] }

    func nodeSpec(_ n: Int32, _ name: String) -> Littlehorse_Node { threadSpec(n).nodes[name] ?? Littlehorse_Node() }

    mutating func updateNode(_ key: NodeRunKey, _ body: (inout NodeRun) -> Void) {
        // In place: a copy taken out of the dictionary would share its
        // storage and copy it again on the first change.
        guard state.nodeRuns[key] != nil else { return }
        body(&state.nodeRuns[key]!)
    }

    // MARK: - Starting threads

    /// Creates a ThreadRun with its variables and starts its ENTRYPOINT node.
    /// Returns its number, or nil when the WfRun has too many threads (the
    /// caller's node then fails).
    mutating func startThread(
        specName: String, type: Littlehorse_ThreadType, parent: Int32?, inputs: [String: Value],
        interruptTrigger: Littlehorse_ExternalEventId? = nil
    ) -> Int32? {
        guard state.wfRun.threadRuns.count < context.limits.maxThreadRuns else { return nil }
        let number = Int32(state.wfRun.threadRuns.count)
        var t = ThreadRun()
        t.wfSpecID = context.spec.id
        t.number = number
        t.status = .running
        t.threadSpecName = specName
        t.startTime = timestamp
        t.type = type
        t.currentNodePosition = -1
        if let parent { t.parentThreadID = parent }
        if let interruptTrigger { t.interruptTriggerID = interruptTrigger }
        state.wfRun.threadRuns.append(t)
        state.wfRun.greatestThreadrunNumber = number
        if let parent { update(parent) { $0.childThreadIds.append(number) } }

        let spec = context.spec.threadSpecs[specName] ?? Littlehorse_ThreadSpec()
        var castFailure: Failure?
        for def in spec.variableDefs {
            var value = Value.null
            if let given = inputs[def.varDef.name], !given.isNull {
                if let declared = def.varDef.declaredType {
                    do {
                        value = try given.cast(to: declared)
                    } catch {
                        castFailure =
                            castFailure
                            ?? .error(
                                .varSubError,
                                "variable '\(def.varDef.name)' of thread \(number) (\(specName)) is declared \(declared.name) but was given \(given.typeName): \(error)"
                            )
                    }
                } else {
                    value = given
                }
            } else if def.varDef.hasDefaultValue {
                value = def.varDef.defaultValue
            }
            var variable = Littlehorse_Variable()
            variable.id.wfRunID = wfRunId
            variable.id.threadRunNumber = number
            variable.id.name = def.varDef.name
            variable.value = value
            variable.createdAt = timestamp
            variable.wfSpecID = context.spec.id
            variable.masked = def.varDef.maskedValue
            state.variables[VariableKey(thread: number, name: def.varDef.name)] = variable
        }
        guard
            let entry = spec.nodes.first(where: {
                if case .entrypoint? = $0.value.node { return true } else { return false }
            })
        else {
            failThread(number, .error(.internalError, "ThreadSpec '\(specName)' has no ENTRYPOINT node"))
            return number
        }
        if let castFailure {
            failThread(number, castFailure)
            return number
        }
        activate(number, nodeName: entry.key)
        return number
    }

    // MARK: - The loop

    /// Moves every thread forward until none can move without a command.
    mutating func settle() {
        var progress = true
        while progress {
            progress = false
            var n: Int32 = 0
            while Int(n) < state.wfRun.threadRuns.count {
                if step(n) { progress = true }
                n += 1
            }
        }
        updateWfRunStatus()
    }

    /// One thread's move; true if anything changed.
    mutating func step(_ n: Int32) -> Bool {
        let t = thread(n)
        if t.status.isTerminal { return false }
        if !t.haltReasons.isEmpty { return haltStep(n) }
        if t.status == .halting || t.status == .halted {
            resume(n)
            return true
        }
        return runStep(n)
    }

    // MARK: - Running

    mutating func runStep(_ n: Int32) -> Bool {
        guard let node = currentNode(n) else { return false }
        switch node.status {
        case .completed:
            if case .exit = node.nodeType { return false }
            advance(n, from: node)
            return true
        case .error, .exception:
            if let last = node.failures.last, last.wasProperlyHandled {
                // The failure handler completed: move past the failed node.
                advance(n, from: node)
                return true
            }
            return false
        case .running, .starting:
            return tryComplete(n, node)
        default:
            return false
        }
    }

    /// Takes the first outgoing edge whose condition holds, applies its
    /// mutations and starts its sink node.
    mutating func advance(_ n: Int32, from node: NodeRun) {
        let spec = nodeSpec(n, node.nodeName)
        let key = NodeRunKey(thread: n, position: node.id.position)
        let output = nodeOutput(n, node)
        for (i, edge) in spec.outgoingEdges.enumerated() {
            let holds: Bool
            do {
                holds = try edgeHolds(n, edge)
            } catch {
                refail(
                    key,
                    .error(.varSubError, "edge \(i) of node '\(node.nodeName)' to '\(edge.sinkNodeName)': \(error)"))
                return
            }
            guard holds else { continue }
            for mutation in edge.variableMutations {
                do {
                    try mutate(n, mutation, nodeOutput: output)
                } catch {
                    refail(
                        key,
                        .error(
                            .varMutationError, "mutating '\(mutation.lhsName)' after node '\(node.nodeName)': \(error)")
                    )
                    return
                }
            }
            activate(n, nodeName: edge.sinkNodeName)
            return
        }
        refail(key, .error(.varSubError, "no outgoing edge of node '\(node.nodeName)' has a condition that holds"))
    }

    /// A node that had completed (or whose failure was handled) fails after
    /// all, because leaving it went wrong.
    mutating func refail(_ key: NodeRunKey, _ failure: Failure) {
        failNode(key, failure)
    }

    func edgeHolds(_ n: Int32, _ edge: Littlehorse_Edge) throws -> Bool {
        switch edge.edgeCondition {
        case nil:
            return true
        case .legacyCondition(let c):
            return try Compare.evaluate(c.comparator, evaluate(n, c.left), evaluate(n, c.right))
        case .condition(let assignment):
            let v = try evaluate(n, assignment)
            guard case .bool(let b) = v.value else { throw ValueError("condition is \(v.typeName), not BOOL") }
            return b
        }
    }

    // MARK: - Node arrival

    mutating func activate(_ n: Int32, nodeName: String) {
        nodeRunsStarted += 1
        if nodeRunsStarted > context.limits.maxNodeRunsPerCommand {
            failThread(
                n,
                .error(
                    .internalError,
                    "thread \(n) started more than \(context.limits.maxNodeRunsPerCommand) NodeRuns in one step; stopped as a runaway loop at node '\(nodeName)'"
                ))
            return
        }
        let position = thread(n).currentNodePosition + 1
        let key = NodeRunKey(thread: n, position: position)
        var nr = NodeRun()
        nr.id.wfRunID = wfRunId
        nr.id.threadRunNumber = n
        nr.id.position = position
        nr.wfSpecID = context.spec.id
        nr.status = .running
        nr.arrivalTime = timestamp
        nr.threadSpecName = thread(n).threadSpecName
        nr.nodeName = nodeName
        let spec = nodeSpec(n, nodeName)
        switch spec.node {
        case .entrypoint: nr.entrypoint = .init()
        case .exit: nr.exit = .init()
        case .task: nr.task = .init()
        case .externalEvent(let e): nr.externalEvent = .with { $0.externalEventDefID = e.externalEventDefID }
        case .sleep: nr.sleep = .init()
        case .startThread(let s): nr.startThread = .with { $0.threadSpecName = s.threadSpecName }
        case .waitForThreads: nr.waitForThreads = .init()
        default: break
        }
        state.nodeRuns[key] = nr
        update(n) { $0.currentNodePosition = position }

        switch spec.node {
        case .entrypoint, .nop:
            completeNode(key)
        case .exit:
            _ = tryComplete(n, nr)
        case .task(let task):
            startTask(key, task)
        case .externalEvent(let e):
            if e.hasTimeoutSeconds {
                do {
                    let seconds = try evaluate(n, e.timeoutSeconds).cast(to: .int)
                    if case .int(let s) = seconds.value, s > 0 {
                        effects.append(
                            .scheduleTimer(at: now.addingTimeInterval(Double(s)), key: .externalEventTimeout(key)))
                    }
                } catch {
                    failNode(key, .error(.varSubError, "timeout of EXTERNAL_EVENT node '\(nodeName)': \(error)"))
                    return
                }
            }
            _ = tryComplete(n, nr)
        case .sleep(let s):
            startSleep(key, s)
        case .startThread(let s):
            var inputs: [String: Value] = [:]
            do {
                for (name, assignment) in s.variables { inputs[name] = try evaluate(n, assignment) }
            } catch {
                failNode(key, .error(.varSubError, "variables of START_THREAD node '\(nodeName)': \(error)"))
                return
            }
            guard let child = startThread(specName: s.threadSpecName, type: .child, parent: n, inputs: inputs) else {
                failNode(
                    key,
                    .error(.internalError, "the WfRun reached its limit of \(context.limits.maxThreadRuns) ThreadRuns"))
                return
            }
            updateNode(key) { $0.startThread.childThreadID = child }
            completeNode(key)
        case .waitForThreads(let w):
            do {
                let numbers = try threadsToWaitFor(n, w)
                updateNode(key) { node in
                    node.waitForThreads.threads = numbers.map { number in
                        .with {
                            $0.threadRunNumber = number; $0.threadStatus = .running;
                            $0.waitingStatus = .threadInProgress
                        }
                    }
                }
            } catch {
                failNode(key, .error(.varSubError, "threads of WAIT_FOR_THREADS node '\(nodeName)': \(error)"))
                return
            }
            _ = tryComplete(n, state.nodeRuns[key]!)
        default:
            failNode(key, .error(.internalError, "node '\(nodeName)' is of a kind this engine does not run"))
        }
    }

    func threadsToWaitFor(_ n: Int32, _ w: Littlehorse_WaitForThreadsNode) throws -> [Int32] {
        switch w.threadsToWaitFor {
        case .threads(let list):
            return try list.threads.map { item in
                guard case .int(let i) = try evaluate(n, item.threadRunNumber).cast(to: .int).value else {
                    throw ValueError("thread number is not an INT")
                }
                return Int32(i)
            }
        case .threadList(let assignment):
            guard case .array(let items) = try evaluate(n, assignment).json() else {
                throw ValueError("thread_list is not a JSON_ARR")
            }
            return try items.map { item in
                guard case .int(let i) = item else {
                    throw ValueError("thread_list holds \(item.typeName), not thread numbers")
                }
                return Int32(i)
            }
        case nil:
            return []
        }
    }

    mutating func startSleep(_ key: NodeRunKey, _ s: Littlehorse_SleepNode) {
        let n = key.thread
        let maturation: Date
        do {
            switch s.sleepLength {
            case .rawSeconds(let a):
                guard let secs = try evaluate(n, a).cast(to: .double).number else {
                    throw ValueError("raw_seconds is not a number")
                }
                maturation = now.addingTimeInterval(secs)
            case .timestamp(let a):
                let v = try evaluate(n, a)
                if case .utcTimestamp(let t) = v.value {
                    maturation = t.date
                } else if case .int(let ms) = try v.cast(to: .int).value {
                    maturation = Date(timeIntervalSince1970: Double(ms) / 1000)
                } else {
                    throw ValueError("timestamp is \(v.typeName)")
                }
            case .isoDate(let a):
                guard case .utcTimestamp(let t) = try evaluate(n, a).cast(to: .timestamp).value else {
                    throw ValueError("iso_date is not a date")
                }
                maturation = t.date
            case nil:
                throw ValueError("SLEEP node has no length")
            }
        } catch {
            failNode(
                key, .error(.varSubError, "length of SLEEP node '\(state.nodeRuns[key]?.nodeName ?? "")': \(error)"))
            return
        }
        updateNode(key) { $0.sleep.maturationTime = Google_Protobuf_Timestamp(date: maturation) }
        if maturation <= now {
            updateNode(key) { $0.sleep.matured = true }
            completeNode(key)
        } else {
            effects.append(.scheduleTimer(at: maturation, key: .sleep(key)))
        }
    }

    /// A RUNNING node that waits for something: completes it when that has
    /// happened. True if anything changed.
    mutating func tryComplete(_ n: Int32, _ node: NodeRun) -> Bool {
        let key = NodeRunKey(thread: n, position: node.id.position)
        switch node.nodeType {
        case .exit:
            let waiting = children(n).filter { !thread($0).status.isTerminal }
            guard waiting.isEmpty else { return false }
            let spec = nodeSpec(n, node.nodeName).exit
            switch spec.result {
            case .failureDef(let def):
                var failure = Failure(name: def.failureName, message: def.message, content: nil)
                if def.hasContent {
                    do { failure.content = try evaluate(n, def.content) } catch {
                        failNode(
                            key,
                            .error(.varSubError, "content of the failure of EXIT node '\(node.nodeName)': \(error)"))
                        return true
                    }
                }
                failNode(key, failure)
            case .returnContent(let a):
                do {
                    let output = try evaluate(n, a)
                    update(n) { $0.output = output }
                } catch {
                    failNode(key, .error(.varSubError, "return content of EXIT node '\(node.nodeName)': \(error)"))
                    return true
                }
                completeNode(key)
                completeThread(n)
            case nil:
                completeNode(key)
                completeThread(n)
            }
            return true
        case .externalEvent(let run):
            if run.timedOut {
                failNode(
                    key,
                    .error(
                        .timeout,
                        "no ExternalEvent '\(run.externalEventDefID.name)' arrived before the timeout of node '\(node.nodeName)'"
                    ))
                return true
            }
            guard
                let index = state.externalEvents.firstIndex(where: { e in
                    !e.claimed && e.id.externalEventDefID.name == run.externalEventDefID.name
                        && (!e.hasThreadRunNumber || e.threadRunNumber == n)
                })
            else { return false }
            state.externalEvents[index].claimed = true
            state.externalEvents[index].threadRunNumber = n
            state.externalEvents[index].nodeRunPosition = key.position
            let event = state.externalEvents[index]
            updateNode(key) {
                $0.externalEvent.externalEventID = event.id
                $0.externalEvent.eventTime = event.createdAt
            }
            cancelNodeTimers(key)
            completeNode(key)
            return true
        case .sleep(let s):
            guard s.matured else { return false }
            completeNode(key)
            return true
        case .waitForThreads(let w):
            return evaluateWait(key, node.nodeName, w)
        default:
            return false
        }
    }

    mutating func evaluateWait(_ key: NodeRunKey, _ nodeName: String, _ w: Littlehorse_WaitForThreadsRun) -> Bool {
        let nodeSpec = nodeSpec(key.thread, nodeName).waitForThreads
        let strategy = nodeSpec.strategy
        var run = w
        var changed = false
        for i in run.threads.indices {
            let number = run.threads[i].threadRunNumber
            let child = thread(number)
            if run.threads[i].threadStatus != child.status {
                run.threads[i].threadStatus = child.status
                changed = true
            }
            if child.status.isTerminal, run.threads[i].waitingStatus == .threadInProgress {
                if child.hasEndTime { run.threads[i].threadEndTime = child.endTime }
                if child.status == .completed {
                    run.threads[i].waitingStatus = .threadCompletedOrFailureHandled
                } else if let failure = lastFailure(of: number),
                    let handler = failureHandler(
                        for: failure,
                        in: Littlehorse_Node.with { $0.failureHandlers = nodeSpec.perThreadFailureHandlers })
                {
                    // A per-thread failure handler runs as a child of the waiting thread.
                    let spec = context.spec.threadSpecs[handler] ?? Littlehorse_ThreadSpec()
                    let declaresInput = spec.variableDefs.contains { $0.varDef.name == "INPUT" }
                    update(key.thread) { $0.handledFailedChildren.append(number) }
                    if let h = startThread(
                        specName: handler, type: .failureHandler, parent: key.thread,
                        inputs: declaresInput ? ["INPUT": failure.content ?? .null] : [:])
                    {
                        run.threads[i].waitingStatus = .threadHandlingFailure
                        run.threads[i].failureHandlerThreadRunID = h
                    } else {
                        run.threads[i].waitingStatus = .threadUnsuccessful
                    }
                } else {
                    run.threads[i].waitingStatus = .threadUnsuccessful
                }
                changed = true
            }
            if run.threads[i].waitingStatus == .threadHandlingFailure {
                let handler = thread(run.threads[i].failureHandlerThreadRunID)
                if handler.status == .completed {
                    run.threads[i].waitingStatus = .threadCompletedOrFailureHandled
                    changed = true
                } else if handler.status.isTerminal {
                    run.threads[i].waitingStatus = .threadUnsuccessful
                    changed = true
                }
            }
        }
        if changed || run != w { updateNode(key) { $0.waitForThreads = run } }
        let done = run.threads.filter { $0.waitingStatus == .threadCompletedOrFailureHandled }
        let failed = run.threads.filter { $0.waitingStatus == .threadUnsuccessful }
        let total = run.threads.count
        func failWith(_ item: Littlehorse_WaitForThreadsRun.WaitForThread) {
            let child = thread(item.threadRunNumber)
            if child.status == .exception, let failure = lastFailure(of: item.threadRunNumber) {
                failNode(key, failure)
            } else {
                failNode(
                    key,
                    .error(
                        .childFailure,
                        "child thread \(item.threadRunNumber) (\(child.threadSpecName)) failed: \(child.errorMessage)"))
            }
        }
        switch strategy {
        case .waitForAll, .UNRECOGNIZED:
            if let bad = failed.first { failWith(bad); return true }
            if done.count == total { completeNode(key); return true }
        case .waitForFirst:
            if let first = run.threads.filter({ $0.waitingStatus != .threadInProgress }).min(by: {
                $0.threadEndTime.date < $1.threadEndTime.date
            }) {
                if first.waitingStatus == .threadCompletedOrFailureHandled {
                    completeNode(key)
                } else {
                    failWith(first)
                }
                return true
            }
            if total == 0 { completeNode(key); return true }
        case .waitForAny:
            if !done.isEmpty || total == 0 { completeNode(key); return true }
            if failed.count == total, let bad = failed.first { failWith(bad); return true }
        }
        return changed
    }

    /// The failure that ended a thread (from its last failed NodeRun).
    func lastFailure(of n: Int32) -> Failure? {
        let position = thread(n).currentNodePosition
        guard let node = state.nodeRuns[NodeRunKey(thread: n, position: position)], let f = node.failures.last else {
            return nil
        }
        return Failure(f)
    }

    // MARK: - Completing and failing

    mutating func completeNode(_ key: NodeRunKey) {
        let ts = timestamp
        updateNode(key) {
            $0.status = .completed
            $0.endTime = ts
        }
    }

    mutating func completeThread(_ n: Int32) {
        let ts = timestamp
        update(n) {
            $0.status = .completed
            $0.endTime = ts
        }
        threadTerminated(n)
    }

    /// Fails a NodeRun; its failure handlers (or the thread's end) follow.
    mutating func failNode(_ key: NodeRunKey, _ failure: Failure) {
        let ts = timestamp
        let n = key.thread
        guard let node = state.nodeRuns[key] else {
            failThread(n, failure)
            return
        }
        cancelNodeTimers(key)
        updateNode(key) {
            $0.status = failure.isError ? .error : .exception
            $0.errorMessage = failure.message
            $0.endTime = ts
            $0.failures.append(failure.proto)
        }
        if let handler = failureHandler(for: failure, in: nodeSpec(n, node.nodeName)) {
            var pending = Littlehorse_PendingFailureHandler()
            pending.failedThreadRun = n
            pending.handlerSpecName = handler
            state.wfRun.pendingFailures.append(pending)
            update(n) { $0.haltReasons.append(.with { $0.pendingFailure.nodeRunPosition = key.position }) }
        } else {
            failThread(n, failure)
        }
    }

    func failureHandler(for failure: Failure, in node: Littlehorse_Node) -> String? {
        for handler in node.failureHandlers {
            switch handler.failureToCatch {
            case .specificFailure(let name): if name == failure.name { return handler.handlerSpecName }
            case .anyFailureOfType(let type):
                if (type == .failureTypeError) == failure.isError { return handler.handlerSpecName }
            case nil: return handler.handlerSpecName
            }
        }
        return nil
    }

    /// Ends a thread with ERROR or EXCEPTION; its children are halted.
    mutating func failThread(_ n: Int32, _ failure: Failure) {
        let ts = timestamp
        guard !thread(n).status.isTerminal else { return }
        update(n) {
            $0.status = failure.isError ? .error : .exception
            $0.errorMessage = "\(failure.name): \(failure.message)"
            $0.endTime = ts
        }
        if let node = currentNode(n), !node.status.isTerminal, node.failures.isEmpty {
            // The thread ends under a node that did not fail itself.
            let key = nodeRunKey(n)
            cancelNodeTimers(key)
            withdrawIfQueued(key)
            updateNode(key) {
                $0.status = failure.isError ? .error : .exception
                $0.errorMessage = failure.message
                $0.endTime = ts
                $0.failures.append(failure.proto)
            }
        }
        // Remember the failure on the thread's last NodeRun for propagation.
        if let node = currentNode(n), node.failures.isEmpty || Failure(node.failures.last!) != failure {
            updateNode(nodeRunKey(n)) { $0.failures.append(failure.proto) }
        }
        for child in children(n) where !thread(child).status.isTerminal {
            addHaltReason(child, .with { $0.parentHalted.parentThreadID = n })
        }
        threadTerminated(n)
    }

    /// What a thread's end means for its parent and the WfRun.
    mutating func threadTerminated(_ n: Int32) {
        let t = thread(n)
        guard t.hasParentThreadID else {
            // The entrypoint: the WfRun ends with it.
            state.wfRun.status = t.status
            state.wfRun.endTime = timestamp
            effects.append(.wfRunTerminated(t.status))
            return
        }
        let parent = t.parentThreadID
        switch t.type {
        case .interrupt:
            removeHaltReason(parent) {
                if case .interrupted(let i)? = $0.reason { return i.interruptThreadID == n } else { return false }
            }
            if t.status != .completed, !thread(parent).status.isTerminal {
                let failure = lastFailure(of: n) ?? .error(.internalError, t.errorMessage)
                let key = nodeRunKey(parent)
                let propagated =
                    failure.isError
                    ? Failure.error(
                        .childFailure,
                        "interrupt handler thread \(n) (\(t.threadSpecName)) failed: \(failure.name): \(failure.message)"
                    )
                    : failure
                failInterruptedNode(key, propagated)
            }
        case .failureHandler:
            // A per-thread handler of WAIT_FOR_THREADS is seen by that node;
            // only a node's own failure handler changes the parent here.
            let handlesNodeFailure = thread(parent).haltReasons.contains {
                if case .handlingFailure(let h)? = $0.reason { return h.handlerThreadID == n } else { return false }
            }
            guard handlesNodeFailure else { break }
            removeHaltReason(parent) {
                if case .handlingFailure(let h)? = $0.reason { return h.handlerThreadID == n } else { return false }
            }
            if t.status == .completed {
                markFailureHandled(parent, handler: n)
            } else if !thread(parent).status.isTerminal {
                let failure = lastFailure(of: n) ?? .error(.internalError, t.errorMessage)
                failThread(parent, failure)
            }
        default:
            break
        }
    }

    /// An interrupt handler failed: the interrupted NodeRun fails with it,
    /// whatever state it was in, then its failure handlers apply.
    mutating func failInterruptedNode(_ key: NodeRunKey, _ failure: Failure) {
        withdrawIfQueued(key)
        failNode(key, failure)
    }

    mutating func markFailureHandled(_ n: Int32, handler: Int32) {
        for (key, node) in state.nodeRuns where key.thread == n {
            guard
                let i = node.failures.lastIndex(where: {
                    $0.hasFailureHandlerThreadrunID && $0.failureHandlerThreadrunID == handler
                })
            else { continue }
            updateNode(key) { $0.failures[i].wasProperlyHandled = true }
        }
    }

    mutating func cancelNodeTimers(_ key: NodeRunKey) {
        guard let node = state.nodeRuns[key] else { return }
        switch node.nodeType {
        case .sleep(let s) where !s.matured: effects.append(.cancelTimer(.sleep(key)))
        case .externalEvent where !node.status.isTerminal:
            if nodeSpec(key.thread, node.nodeName).externalEvent.hasTimeoutSeconds {
                effects.append(.cancelTimer(.externalEventTimeout(key)))
            }
        default: break
        }
    }
}
