import Foundation
import LHProto
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
        let chain = try certificates(at: config.certificatePath, what: "the TLS certificate")
        let key = try privateKey(at: config.keyPath, what: "the TLS key")
        var tls = TLSConfiguration.makeServerConfiguration(
            certificateChain: chain.map { .certificate($0) }, privateKey: .privateKey(key)
        )
        tls.minimumTLSVersion = .tlsv12
        if let clientCA = config.clientCAPath {
            tls.trustRoots = .certificates(try certificates(at: clientCA, what: "the client CA"))
            tls.certificateVerification = .noHostnameVerification
        }
        return try context(tls, certificate: config.certificatePath, key: config.keyPath)
    }

    public static func makeClientContext(_ config: ClientConfiguration) throws -> NIOSSLContext {
        var tls = TLSConfiguration.makeClientConfiguration()
        tls.minimumTLSVersion = .tlsv12
        if let ca = config.caCertPath {
            tls.trustRoots = .certificates(try certificates(at: ca, what: "the CA certificate", setting: "LHC_CA_CERT"))
        }
        switch (config.clientCertPath, config.clientKeyPath) {
        case (nil, nil):
            return try NIOSSLContext(configuration: tls)
        case (let cert?, let key?):
            tls.certificateChain = try certificates(
                at: cert, what: "the client certificate", setting: "LHC_CLIENT_CERT"
            ).map { .certificate($0) }
            tls.privateKey = .privateKey(try privateKey(at: key, what: "the client key", setting: "LHC_CLIENT_KEY"))
            return try context(tls, certificate: cert, key: key)
        default:
            throw LHError(.invalidArgument, "LHC_CLIENT_CERT and LHC_CLIENT_KEY must be given together")
        }
    }

    /// The certificates of a PEM file; an error names the file and what is
    /// wrong with it (missing, unreadable, a key instead, not PEM).
    public static func certificates(at file: String, what: String, setting: String? = nil) throws
        -> [NIOSSLCertificate]
    {
        let path = setting.map { "\(file) (\($0))" } ?? file
        let text = try pemText(at: file, named: path, what: what)
        guard text.contains("-----BEGIN CERTIFICATE-----") else {
            if text.contains("PRIVATE KEY-----") {
                throw LHError(
                    .invalidArgument,
                    "\(what) \(path) holds a private key, not a certificate (are the certificate and the key swapped?)")
            }
            throw LHError(
                .invalidArgument, "\(what) \(path) holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)")
        }
        do {
            return try NIOSSLCertificate.fromPEMBytes(Array(text.utf8))
        } catch {
            throw LHError(.invalidArgument, "\(what) \(path) is not a valid PEM certificate (\(error))")
        }
    }

    /// The private key of a PEM file, with the same kind of errors; an
    /// encrypted key is refused by name (no passphrase can be given).
    public static func privateKey(at file: String, what: String, setting: String? = nil) throws -> NIOSSLPrivateKey {
        let path = setting.map { "\(file) (\($0))" } ?? file
        let text = try pemText(at: file, named: path, what: what)
        if text.contains("-----BEGIN ENCRYPTED PRIVATE KEY-----") || text.contains("Proc-Type: 4,ENCRYPTED") {
            throw LHError(.invalidArgument, "\(what) \(path) is encrypted; give the key without a passphrase")
        }
        guard text.contains("PRIVATE KEY-----") else {
            if text.contains("-----BEGIN CERTIFICATE-----") {
                throw LHError(
                    .invalidArgument,
                    "\(what) \(path) holds a certificate, not a private key (are the certificate and the key swapped?)")
            }
            throw LHError(
                .invalidArgument, "\(what) \(path) holds no PEM private key (no '-----BEGIN ... PRIVATE KEY-----' line)"
            )
        }
        do {
            return try NIOSSLPrivateKey(bytes: Array(text.utf8), format: .pem)
        } catch {
            throw LHError(.invalidArgument, "\(what) \(path) is not a valid PEM private key (\(error))")
        }
    }

    /// A file's text, or an error in the operating system's words
    /// ("No such file or directory", "Permission denied").
    private static func pemText(at file: String, named path: String, what: String) throws -> String {
        let fd = open(file, O_RDONLY)
        guard fd >= 0 else {
            throw LHError(.invalidArgument, "cannot read \(what) \(path): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 16 << 10)
        while true {
            let n = chunk.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 {
                if errno == EINTR { continue }
                throw LHError(.invalidArgument, "cannot read \(what) \(path): \(String(cString: strerror(errno)))")
            }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[..<n])
            if bytes.count > 16 << 20 {
                throw LHError(.invalidArgument, "\(what) \(path) is larger than 16 MB; not a PEM file")
            }
        }
        return String(decoding: bytes, as: UTF8.self)
    }

    /// The context of a configuration with a certificate and its key; the one
    /// error left at this point is a key that is not the certificate's.
    private static func context(_ tls: TLSConfiguration, certificate: String, key: String) throws -> NIOSSLContext {
        do {
            return try NIOSSLContext(configuration: tls)
        } catch NIOSSLError.failedToLoadPrivateKey {
            throw LHError(.invalidArgument, "the key \(key) is not the private key of the certificate \(certificate)")
        }
    }

    /// The name to send in SNI and verify: nil for an IP address literal
    /// (NIOSSL then verifies the certificate against the peer's address).
    public static func serverHostname(for host: String) -> String? {
        if host.contains(":") { return nil }
        if host.split(separator: ".").count == 4, host.allSatisfy({ $0.isNumber || $0 == "." }) { return nil }
        return host
    }
}
