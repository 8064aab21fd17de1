import Foundation
import LHProto
import LHStore
import LHWire
import LHWireProto
import Logging
import NIOCore
import Synchronization

/// Where a request goes in a cluster of servers on one PostgreSQL database
/// (``LHClusterMembership``): commands for a WfRun to the owner of its
/// partition, metadata writes to the owner of partition 0, everything else
/// (reads, searches) here. A command this server does not own is forwarded
/// over our own protocol to the owner (a *peer* connection, one per owner,
/// kept open), and the owner's answer, sent after its commit, is relayed:
/// acknowledged still means durable.
///
/// A forwarded request is never forwarded again: a peer whose map of owners
/// is stale gets UNAVAILABLE ("not the owner"), reads the owners again and
/// retries once; clients and workers retry UNAVAILABLE as they do today.
final class ClusterRouting: Sendable {
    /// The client id prefix of a peer connection (the hello of a forwarder).
    static let peerPrefix = "lh-peer/"

    enum Route: Equatable {
        case here
        case forward(String)
    }

    let membership: any LHClusterMembership
    private let logger: Logger
    /// TLS of peer connections (nil: plaintext), set once the server knows
    /// its certificates.
    private let peerTLS = Mutex<PeerTLS?>(nil)
    private let links = Mutex<[String: LHWireConnection]>([:])
    enum PeerTLS: Sendable {
        case plaintext
        case tls(LHTLS.ClientConfiguration)
    }

    private let metrics: LHMetrics?

    init(membership: any LHClusterMembership, logger: Logger, metrics: LHMetrics? = nil) {
        self.membership = membership
        self.logger = logger
        self.metrics = metrics
    }

    /// How peer connections are secured: the CA that issued the members'
    /// certificates (a shared development CA, or the operator's).
    func configurePeers(_ tls: PeerTLS) { peerTLS.withLock { $0 = tls } }

    /// The WfRun a command is about; nil for metadata writes (the owner of
    /// partition 0 writes them); `.none` for requests served anywhere.
    enum Subject: Equatable {
        case wfRun(String)
        case metadata
        case anywhere
    }

    static func subject(of request: Lhwire_Envelope.OneOf_Kind) -> Subject {
        switch request {
        case .runWf(let r): .wfRun(r.id)
        case .putExternalEvent(let r): .wfRun(r.wfRunID.id)
        case .stopWfRun(let r): .wfRun(r.wfRunID.id)
        case .resumeWfRun(let r): .wfRun(r.wfRunID.id)
        case .deleteWfRun(let r): .wfRun(r.id.id)
        case .reportTask(let r): .wfRun(r.taskRunID.wfRunID.id)
        case .putTaskDef, .putExternalEventDef, .putWfSpec: .metadata
        default: .anywhere
        }
    }

    /// Whether `request` is served here (cheap, without PostgreSQL: callable
    /// on an event loop).
    func servedHere(_ request: Lhwire_Envelope.OneOf_Kind) -> Bool {
        switch Self.subject(of: request) {
        case .anywhere: true
        case .metadata: membership.ownsMetadata
        case .wfRun(let id): id.isEmpty || membership.owns(wfRunId: id)
        }
    }

    /// Where `request` is served, waiting up to `patience` seconds while
    /// its partition has no live owner (it moves between servers: one
    /// released it, another is loading it), reading the owners again every
    /// tenth of a second. Past that (a killed owner's lease still runs),
    /// UNAVAILABLE: the client retries.
    func route(_ request: Lhwire_Envelope.OneOf_Kind, fromPeer: Bool, patience: Double) async throws -> Route {
        let deadline = Date().addingTimeInterval(patience)
        while true {
            do {
                return try route(request, fromPeer: fromPeer)
            } catch let error as LHError where error.code == .unavailable && !fromPeer && Date() < deadline {
                try await Task.sleep(for: .milliseconds(100))
                let membership = self.membership
                await lhOffPool { membership.readOwners() }
            }
        }
    }

    /// Where `request` is served. `fromPeer`: it was forwarded to us, so it
    /// is served here or refused, never forwarded on.
    func route(_ request: Lhwire_Envelope.OneOf_Kind, fromPeer: Bool) throws -> Route {
        let wfRunId: String?
        switch Self.subject(of: request) {
        case .anywhere: return .here
        case .metadata:
            if membership.ownsMetadata { return .here }
            wfRunId = nil
        case .wfRun(let id):
            // An empty id is refused by the request's own checks, here.
            if id.isEmpty { return .here }
            if membership.owns(wfRunId: id) { return .here }
            wfRunId = id
        }
        let what = wfRunId.map { "WfRun '\($0)'" } ?? "metadata"
        if fromPeer {
            membership.refreshOwners()
            throw LHError(
                .unavailable,
                "this server (member \(membership.memberId)) does not own \(what): the partitions moved; retry")
        }
        guard let address = membership.ownerAddress(of: wfRunId) else {
            throw LHError(
                .unavailable,
                "no live server owns \(what) now (a server is taking over its partitions); retry in a moment")
        }
        return .forward(address)
    }

    /// Sends `request` to the owner at `address` and returns its answer;
    /// when the owner cannot be reached, reads the owners again and tries
    /// the new one once.
    func forward(_ request: Lhwire_Envelope.OneOf_Kind, to address: String) async throws
        -> Lhwire_Envelope.OneOf_Kind
    {
        let start = ContinuousClock.now
        var code = "OK"
        defer { metrics?.forwarded(code: code, seconds: (ContinuousClock.now - start) / .seconds(1)) }
        do {
            return try await forwardOnce(request, to: address)
        } catch {
            code = LHMetrics.code(of: error)
            throw error
        }
    }

    private func forwardOnce(_ request: Lhwire_Envelope.OneOf_Kind, to address: String) async throws
        -> Lhwire_Envelope.OneOf_Kind
    {
        do {
            return try await send(request, to: address)
        } catch let error as PeerUnreachable {
            membership.refreshOwners()
            guard case .forward(let next)? = try? route(request, fromPeer: false), next != address else {
                throw LHError(
                    .unavailable,
                    "the owner of this request's partition (\(address)) cannot be reached: \(error.reason); retry")
            }
            do {
                return try await send(request, to: next)
            } catch let again as PeerUnreachable {
                throw LHError(
                    .unavailable, "the owner of this request's partition (\(next)) cannot be reached: \(again.reason)")
            }
        }
    }

    private struct PeerUnreachable: Error {
        var reason: String
    }

    /// Peer links send a heartbeat every second: a link to an owner that
    /// stopped answering (killed without its sockets closing, or paused)
    /// closes after three silent seconds, failing what waits on it.
    ///
    /// A failure before the request left is `PeerUnreachable` (safe to send
    /// elsewhere); a connection lost with the request in flight is
    /// UNAVAILABLE, like a crash of a server the client talks to directly:
    /// the owner may have committed it, so only the client retries (with
    /// its idempotent ids and guids).
    private func send(_ request: Lhwire_Envelope.OneOf_Kind, to address: String) async throws
        -> Lhwire_Envelope.OneOf_Kind
    {
        let link = try await link(to: address)
        do {
            return try await link.request(request)
        } catch let error as LHError where error.code == .connectionClosed || !link.channel.isActive {
            drop(address, link)
            membership.refreshOwners()
            throw LHError(
                .unavailable,
                "the owner of this request's partition (\(address)) closed the connection before answering: \(error.message); retry"
            )
        }
    }

    private func link(to address: String) async throws -> LHWireConnection {
        if let open = links.withLock({ $0[address] }), open.channel.isActive { return open }
        guard let colon = address.lastIndex(of: ":"), let port = Int(address[address.index(after: colon)...]) else {
            throw PeerUnreachable(reason: "'\(address)' is not HOST:PORT")
        }
        var host = String(address[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        if host == "0.0.0.0" || host == "::" { host = "127.0.0.1" }
        let tls: LHTLS.ClientConfiguration?
        switch peerTLS.withLock({ $0 }) {
        case .plaintext: tls = nil
        case .tls(let config): tls = config
        case nil: throw PeerUnreachable(reason: "this server is still starting")
        }
        let connection: LHWireConnection
        do {
            var configuration = LHWireConnection.Configuration(
                host: host, port: port, tls: tls, clientId: "\(Self.peerPrefix)\(membership.memberId)",
                role: .admin, heartbeatInterval: .seconds(1), connectTimeout: .seconds(2),
                requestTimeout: .seconds(10))
            configuration.helloTimeout = .seconds(5)
            connection = try await LHWireConnection.connect(configuration, logger: logger)
        } catch {
            throw PeerUnreachable(reason: "\(error)")
        }
        let (kept, extra) = links.withLock { l -> (LHWireConnection, LHWireConnection?) in
            if let other = l[address], other.channel.isActive { return (other, connection) }
            l[address] = connection
            return (connection, nil)
        }
        if let extra { await extra.close() }
        logger.info("connected to a peer", metadata: ["lh.peer": "\(address)"])
        return kept
    }

    private func drop(_ address: String, _ link: LHWireConnection) {
        links.withLock { l in
            if l[address] === link { l[address] = nil }
        }
    }

    /// Closes the peer connections (the server stops).
    func close() async {
        let all = links.withLock { l in
            defer { l = [:] }
            return Array(l.values)
        }
        for link in all { await link.close() }
    }
}

extension AdminService {
    /// A RunWf without an id gets its id here, before it is routed: the id
    /// picks the partition, and a forwarded RunWf keeps it.
    func withId(_ request: Lhwire_Envelope.OneOf_Kind) -> Lhwire_Envelope.OneOf_Kind {
        guard case .runWf(var r) = request, !r.hasID else { return request }
        r.id = LHIds.timeOrdered(now: clock.now())
        return .runWf(r)
    }

    /// A command (a WfRun command or a metadata write) served here, whichever
    /// door it came through; `connection`: the worker connection a report
    /// came on (nil: gRPC, the dashboard, a peer). The answer as our
    /// protocol sends it.
    func execute(_ request: Lhwire_Envelope.OneOf_Kind, from connection: ObjectIdentifier?) async throws
        -> Lhwire_Envelope.OneOf_Kind
    {
        switch request {
        case .runWf(let r): return .wfRun(try await submit(runWf(r)))
        case .putExternalEvent(let r): return .externalEvent(try await submit(putExternalEvent(r)))
        case .stopWfRun(let r): try await submit(stopWfRun(r))
        case .resumeWfRun(let r): try await submit(resumeWfRun(r))
        case .deleteWfRun(let r): try await submit(deleteWfRun(r))
        case .reportTask(let report):
            // The worker has room again once its report is settled, either way.
            defer { if let connection { reported(report, connection: connection) } }
            try await submit(reportTask(report, from: connection))
        case .putTaskDef(let r): return .taskDef(try await putTaskDef(r))
        case .putExternalEventDef(let r): return .externalEventDef(try await putExternalEventDef(r))
        case .putWfSpec(let r): return .wfSpec(try await putWfSpec(r))
        default:
            throw LHError(.internal, "\(Lhwire_Envelope(id: 0, request).kindName) is not a command")
        }
        return .empty(.init())
    }

    /// A command from a door other than our protocol's (gRPC, the
    /// dashboard): served here, or at its owner when another server owns
    /// it; `answer` reads the answer (``execute(_:from:)``'s, or the
    /// owner's).
    func command<Out: Sendable>(_ request: Lhwire_Envelope.OneOf_Kind, answer: (Lhwire_Envelope.OneOf_Kind) -> Out?)
        async throws -> Out
    {
        var where_ = "this server"
        let reply: Lhwire_Envelope.OneOf_Kind
        if let cluster {
            let request = withId(request)
            switch try await cluster.route(request, fromPeer: false, patience: 3) {
            case .here:
                reply = try await freshOnMiss { try await execute(request, from: nil) }
            case .forward(let owner):
                where_ = "the owner at \(owner)"
                reply = try await cluster.forward(request, to: owner)
            }
        } else {
            reply = try await execute(request, from: nil)
        }
        guard let out = answer(reply) else {
            throw LHError(.internal, "\(where_) answered with \(Lhwire_Envelope(id: 0, reply).kindName)")
        }
        return out
    }

    /// Whether this server's metadata may lag behind the store's: it is in
    /// a cluster and another member writes metadata (this one follows every
    /// ownership round, and on a miss).
    var metadataMayBeStale: Bool { cluster.map { !$0.membership.ownsMetadata } ?? false }

    /// Runs `body`; when it fails with NOT_FOUND on a server whose metadata
    /// may lag (a WfSpec put through another server a moment ago), reads
    /// the metadata again and runs it once more.
    func freshOnMiss<T>(_ body: () async throws -> T) async throws -> T {
        do {
            return try await body()
        } catch let error as LHError where error.code == .notFound && metadataMayBeStale {
            let store = self.store
            guard let fresh = await lhOffPool({ try? MetadataCache(loadingFrom: store) }) else { throw error }
            await processor.updateMetadata { $0 = fresh }
            return try await body()
        }
    }

    /// The metadata to answer a lookup that missed: on a server that does
    /// not write metadata (another server does), read from the store, so a
    /// TaskDef, ExternalEventDef or WfSpec put through another server is
    /// found at once (the cache follows at the next standby tick).
    func metadataAfterMiss() -> MetadataCache? {
        guard let cluster, !cluster.membership.ownsMetadata else { return nil }
        return try? MetadataCache(loadingFrom: store)
    }
}
