import Foundation
import LHEngine
import LHStore

/// Runs one group commit's jobs: each WfRun's jobs in order on a staging of
/// its own, different WfRuns side by side. A job that fails leaves no
/// trace: its changes are undone and its reservations given back.
struct BatchBuilder: Sendable {
    typealias Work = @Sendable (inout Staging) throws -> any Sendable
    typealias Outcome = (staging: Staging, results: [(Int, Result<any Sendable, Error>)])

    /// Batches of at most this many jobs run on the processor's own thread.
    static let inlineJobs = 6
    /// Child tasks that run a larger batch's jobs: one per core.
    static let lanes = max(2, ProcessInfo.processInfo.activeProcessorCount)

    let now: Date
    let metadata: MetadataCache
    let store: any LHStorage
    let base: PipelineBase
    let cache: StateCache
    let reservations: (any DirectReservations)?

    private func staging() -> Staging {
        let (overlay, cache, store) = (base.overlay, cache, store)
        return Staging(
            now: now, metadata: metadata, store: store, pendingOrphans: base.orphans, reservations: reservations
        ) { id in
            if let entry = overlay[id] { return entry.state }
            if let s = cache.get(id) { return s }
            return try store.wfRun(id)
        }
    }

    /// One WfRun's jobs in order, on its own staging; the stored forms are
    /// made here, in parallel, not in the serial commit.
    func run(_ works: [(Int, Work)]) -> Outcome {
        var staging = staging()
        var out: [(Int, Result<any Sendable, Error>)] = []
        out.reserveCapacity(works.count)
        for (i, work) in works {
            // The first job's "before" is a fresh staging: no copy needed.
            let before: Staging? = out.isEmpty ? nil : staging
            do {
                out.append((i, .success(try work(&staging))))
            } catch {
                staging.releaseDeliveries(after: before?.deliveries.count ?? 0)
                staging = before ?? self.staging()
                out.append((i, .failure(error)))
            }
        }
        staging.prepareWrites()
        return (staging, out)
    }

    /// Runs all jobs, grouped by WfRun: a few right here (no thread to wake),
    /// more in one child task per core, each lane also freeing its share of
    /// the states the cache let go (`dead`).
    func run(_ jobs: [CommandProcessor.Job], freeing dead: consuming [[WfRunState]]) async -> [Outcome] {
        let groups = Dictionary(grouping: jobs.indices, by: { jobs[$0].key }).values.map { indices in
            indices.map { ($0, jobs[$0].work) }
        }
        if jobs.count <= Self.inlineJobs {
            dead = []
            return groups.map { run($0) }
        }
        let lanes = min(groups.count, Self.lanes)
        var shares = [[[WfRunState]]](repeating: [], count: lanes)
        for (i, states) in dead.enumerated() { shares[i % lanes].append(states) }
        dead = []
        return await withTaskGroup(of: [Outcome].self) { group in
            for lane in 0..<lanes {
                let graves = Graves(shares[lane])
                shares[lane] = []
                group.addTask {
                    graves.free()
                    return stride(from: lane, to: groups.count, by: lanes).map { run(groups[$0]) }
                }
            }
            var outcomes: [Outcome] = []
            for await done in group { outcomes += done }
            return outcomes
        }
    }
}
