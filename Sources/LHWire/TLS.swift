import NIOCore
import NIOSSL

/// TLS set-up for both ends of a connection.
public enum LHTLS {
    /// The server's TLS settings.
    public struct ServerConfiguration: Sendable {
        public var certificatePath: String
        public var keyPath: String
        /// With a client CA, every client must present a certificate signed
        /// by it (mutual TLS); without one, is refused during the handshake.
        public var clientCAPath: String?

        public init(certificatePath: String, keyPath: String, clientCAPath: String? = nil) {
            self.certificatePath = certificatePath
            self.keyPath = keyPath
            self.clientCAPath = clientCAPath
        }
    }

    /// The client's TLS settings (from `LHC_CA_CERT`, `LHC_CLIENT_CERT`,
    /// `LHC_CLIENT_KEY`).
    public struct ClientConfiguration: Sendable {
        /// CA to trust; nil means the system's trust store.
        public var caCertPath: String?
        public var clientCertPath: String?
        public var clientKeyPath: String?

        public init(caCertPath: String? = nil, clientCertPath: String? = nil, clientKeyPath: String? = nil) {
            self.caCertPath = caCertPath
            self.clientCertPath = clientCertPath
            self.clientKeyPath = clientKeyPath
        }
    }

    public static func makeServerContext(_ config: ServerConfiguration) throws -> NIOSSLContext {
        let chain: [NIOSSLCertificate]
        let key: NIOSSLPrivateKey
        do {
            chain = try NIOSSLCertificate.fromPEMFile(config.certificatePath)
        } catch {
            throw LHError(.invalidArgument, "cannot read the TLS certificate \(config.certificatePath): \(error)")
        }
        do {
            key = try NIOSSLPrivateKey(file: config.keyPath, format: .pem)
        } catch {
            throw LHError(.invalidArgument, "cannot read the TLS key \(config.keyPath): \(error)")
        }
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)
        )
        tls.minimumTLSVersion = .tlsv12
        if let clientCA = config.clientCAPath {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(clientCA))
            } catch {
                throw LHError(.invalidArgument, "cannot read the client CA \(clientCA): \(error)")
            }
            tls.certificateVerification = .noHostnameVerification
        }
        return try NIOSSLContext(configuration: tls)
    }

    public static func makeClientContext(_ config: ClientConfiguration) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let ca = config.caCertPath {
            do {
                tls.trustRoots = .certificates(try NIOSSLCertificate.fromPEMFile(ca))
            } catch {
                throw LHError(.invalidArgument, "cannot read the CA certificate \(ca) (LHC_CA_CERT): \(error)")
            }
        }
        switch (config.clientCertPath, config.clientKeyPath) {
        case (nil, nil):
            break
        case (let cert?, let key?):
            do {
                tls.certificateChain = try NIOSSLCertificate.fromPEMFile(cert).map { .certificate($0) }
                tls.privateKey = .privateKey(try NIOSSLPrivateKey(file: key, format: .pem))
            } catch {
                throw LHError(.invalidArgument, "cannot read the client certificate \(cert) or key \(key): \(error)")
            }
        default:
            throw LHError(.invalidArgument, "LHC_CLIENT_CERT and LHC_CLIENT_KEY must be given together")
        }
        return try NIOSSLContext(configuration: tls)
    }

    /// The name to send in SNI and verify: nil for an IP address literal
    /// (NIOSSL then verifies the certificate against the peer's address).
    public static func serverHostname(for host: String) -> String? {
        if host.contains(":") { return nil }
        if host.split(separator: ".").count == 4, host.allSatisfy({ $0.isNumber || $0 == "." }) { return nil }
        return host
    }
}
