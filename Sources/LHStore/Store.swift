import Foundation
import LHEngine
import LHProto

/// One WfRun's state as it was committed.
public typealias StoredState = WfRunState

/// A TaskRun attempt waiting in a TaskDef's queue.
public struct QueuedTask: Sendable, Hashable {
    public var wfRunId: String
    public var taskGuid: String
    public var taskDef: String
    public var attempt: Int32
    public init(wfRunId: String, taskGuid: String, taskDef: String, attempt: Int32) {
        self.wfRunId = wfRunId
        self.taskGuid = taskGuid
        self.taskDef = taskDef
        self.attempt = attempt
    }
}

/// A timer due at a time for one WfRun.
public struct StoredTimer: Sendable, Hashable {
    public var wfRunId: String
    public var key: LHTimerKey
    public var due: Date
    public init(wfRunId: String, key: LHTimerKey, due: Date) {
        self.wfRunId = wfRunId
        self.key = key
        self.due = due
    }
}

/// What one group commit writes: the new states of the WfRuns its commands
/// touched, and the queue and timer changes of their effects.
public struct LHWriteBatch: Sendable {
    public var wfRuns: [String: WfRunState] = [:]
    public var deletedWfRuns: Set<String> = []
    public var enqueued: [QueuedTask] = []
    public var dequeued: [(wfRunId: String, taskGuid: String)] = []
    public var timersSet: [StoredTimer] = []
    public var timersCancelled: [(wfRunId: String, key: LHTimerKey)] = []
    /// Events for WfRuns that do not exist (yet).
    public var orphanEvents: [Littlehorse_ExternalEvent] = []
    public var claimedOrphansOf: Set<String> = []
    /// What the store writes for some of `wfRuns` (their stored form and
    /// rows, in the store's own terms), made ahead (in parallel) by
    /// ``LHStorage/prepareWrites(of:)``; the rest are made at commit.
    public var prepared: [String: any Sendable] = [:]
    /// What is stored of some of `wfRuns` when this batch is written (the
    /// state its first job loaded): their TaskRun and variable rows that did
    /// not change are not written again.
    public var stored: [String: WfRunState] = [:]
    public init() {}

    /// Adds another batch's writes (of other WfRuns) to this one.
    public mutating func merge(_ other: LHWriteBatch) {
        wfRuns.merge(other.wfRuns) { _, b in b }
        deletedWfRuns.formUnion(other.deletedWfRuns)
        enqueued += other.enqueued
        dequeued += other.dequeued
        timersSet += other.timersSet
        timersCancelled += other.timersCancelled
        orphanEvents += other.orphanEvents
        claimedOrphansOf.formUnion(other.claimedOrphansOf)
        prepared.merge(other.prepared) { _, b in b }
        stored.merge(other.stored) { a, _ in a }
    }

    public var isEmpty: Bool {
        wfRuns.isEmpty && deletedWfRuns.isEmpty && enqueued.isEmpty && dequeued.isEmpty && timersSet.isEmpty
            && timersCancelled.isEmpty && orphanEvents.isEmpty && claimedOrphansOf.isEmpty
    }
}

/// A page of search results.
public struct LHPage<T: Sendable>: Sendable {
    public var results: [T]
    /// Where the next page starts; nil on the last page.
    public var bookmark: Data?
}

/// The server's durable storage. Every write is one transaction: when it
/// returns, the data survives a crash.
public protocol LHStorage: Sendable {
    func taskDefs() throws -> [Littlehorse_TaskDef]
    func externalEventDefs() throws -> [Littlehorse_ExternalEventDef]
    func wfSpecs() throws -> [Littlehorse_WfSpec]
    func put(taskDef: Littlehorse_TaskDef) throws
    func put(externalEventDef: Littlehorse_ExternalEventDef) throws
    func put(wfSpec: Littlehorse_WfSpec) throws

    func wfRun(_ id: String) throws -> WfRunState?
    func orphanEvents(of wfRunId: String) throws -> [Littlehorse_ExternalEvent]
    /// Writes the batches in order as one transaction: all of them are
    /// durable when it returns, none when it throws.
    func commit(_ batches: [LHWriteBatch]) throws
    /// Prepares the batch's WfRuns' writes into `batch.prepared` (off the
    /// serial commit's path: run in the processor's parallel lanes).
    func prepareWrites(of batch: inout LHWriteBatch) throws

    func queuedTasks() throws -> [QueuedTask]
    /// The timers to run again after a start: the stored ones and the
    /// timeouts of TaskRun attempts that are TASK_RUNNING (not stored; they
    /// follow from the TaskRuns).
    func timers() throws -> [StoredTimer]

    func searchWfRuns(_ request: Littlehorse_SearchWfRunRequest) throws -> LHPage<String>
    func searchTaskRuns(_ request: Littlehorse_SearchTaskRunRequest) throws -> LHPage<Littlehorse_TaskRunId>
    func searchVariables(_ request: Littlehorse_SearchVariableRequest) throws -> LHPage<Littlehorse_VariableId>
    /// The newest WfRuns first (the dashboard's lists): of one WfSpec and
    /// one status when given, started at or after `since` when given.
    func recentWfRuns(wfSpecName: String?, status: Littlehorse_LHStatus?, since: Date?, limit: Int) throws
        -> [String]
    /// How many WfRuns the store holds in each status (the metrics).
    func wfRunCounts() throws -> [Littlehorse_LHStatus: Int]
}

extension LHStorage {
    /// Writes one batch as one transaction.
    public func commit(_ batch: LHWriteBatch) throws { try commit([batch]) }
}
