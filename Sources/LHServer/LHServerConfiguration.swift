import Foundation
import LHProto
import LHWire
import NIOCore
import Synchronization

/// Settings of one `lh-server`.
package struct LHServerConfiguration: Sendable {
    /// How the listener secures connections.
    package enum TLSMode: Sendable, Equatable {
        /// A development CA and server certificate made on first start in
        /// `<data-dir>/tls/` (the default).
        case developmentCA
        /// Certificate and key files given by the operator.
        case files(certificatePath: String, keyPath: String)
        /// No TLS: an explicit opt-out, logged loudly.
        case plaintext
    }

    package var host: String
    /// 0 picks a free port (see ``WireServer/boundPort()``).
    package var port: Int
    package var dataDirectory: URL
    package var tls: TLSMode
    /// With a client CA, clients must present a certificate signed by it.
    package var clientCAPath: String?
    package var maxFrameBytes: Int
    package var heartbeatInterval: TimeAmount
    package var serverId: String
    /// Names the development server certificate is made for (besides
    /// 127.0.0.1 and ::1), e.g. the service name in docker compose.
    package var tlsHostnames: [String] = ["localhost"]
    /// A development CA shared by the servers of a cluster (its directory):
    /// each server's certificate is issued by it, so clients trust them all
    /// with one CA file.
    package var sharedCADirectory: URL?
    /// Connections open at once; more are closed as they arrive (counted in
    /// `lh_connections_refused_total`).
    package var maxConnections = 10_000
    /// Requests of one connection answered at once: past this the server
    /// stops reading that connection until answers have gone out. It also
    /// stops reading while the connection's answers are not being read by
    /// its peer, so a client that floods or never reads holds a bounded
    /// amount of the server's memory.
    package var maxInFlightPerConnection = 1_024

    package init(
        host: String = "127.0.0.1", port: Int = 2023,
        dataDirectory: URL = URL(fileURLWithPath: "lh-data"),
        tls: TLSMode = .developmentCA, clientCAPath: String? = nil,
        maxFrameBytes: Int = LHFrame.defaultMaxFrameBytes,
        heartbeatInterval: TimeAmount = .seconds(5),
        serverId: String = "lh-server"
    ) {
        self.host = host
        self.port = port
        self.dataDirectory = dataDirectory
        self.tls = tls
        self.clientCAPath = clientCAPath
        self.maxFrameBytes = maxFrameBytes
        self.heartbeatInterval = heartbeatInterval
        self.serverId = serverId
    }

    /// The version this server reports (`lhctl version`).
    package static let version: (major: Int32, minor: Int32, patch: Int32) = (0, 1, 0)

    /// ``version`` as the API answers it.
    static var versionMessage: Littlehorse_LittleHorseVersion {
        .with {
            $0.majorVersion = version.major
            $0.minorVersion = version.minor
            $0.patchVersion = version.patch
        }
    }
}

extension LHServerConfiguration {
    /// Serialises the making of the development CA: every listener asks.
    private static let tlsLock = Mutex(())

    /// The TLS files every listener of this server uses: the operator's, or
    /// the development CA's (made on first use in `<data-dir>/tls`, never
    /// overwritten); nil with plaintext. `devCA` says which CA clients trust.
    func tlsFiles() throws -> (tls: LHTLS.ServerConfiguration, devCA: DevCertificateAuthority.Files?)? {
        switch tls {
        case .plaintext:
            return nil
        case .files(let cert, let key):
            return (.init(certificatePath: cert, keyPath: key, clientCAPath: clientCAPath), nil)
        case .developmentCA:
            let files = try Self.tlsLock.withLock { _ in
                if let sharedCADirectory {
                    return try DevCertificateAuthority.ensure(
                        in: dataDirectory.appendingPathComponent("tls"), sharedCA: sharedCADirectory,
                        hostnames: tlsHostnames)
                }
                return try DevCertificateAuthority.ensure(
                    in: dataDirectory.appendingPathComponent("tls"), hostnames: tlsHostnames)
            }
            let tls = LHTLS.ServerConfiguration(
                certificatePath: files.serverCertPath, keyPath: files.serverKeyPath, clientCAPath: clientCAPath)
            return (tls, files)
        }
    }
}
