import Crypto
import Foundation
import LHProto
import SwiftASN1
import X509

/// A development certificate authority: on a server's first start with no
/// certificate configured, it makes a CA and a server certificate signed by
/// it, in `<data-dir>/tls/`. Clients trust the CA through `LHC_CA_CERT`.
///
/// ```swift
/// let files = try DevCertificateAuthority.ensure(in: dataDir.appending(path: "tls"))
/// print("clients trust \(files.caCertPath)")
/// ```
public enum DevCertificateAuthority {
    /// Where the development CA's files are.
    public struct Files: Sendable, Equatable {
        public var caCertPath: String
        public var caKeyPath: String
        public var serverCertPath: String
        public var serverKeyPath: String
        /// Whether ``ensure(in:hostnames:)`` made them just now.
        public var created: Bool
    }

    /// Returns the CA and server files in `directory`, making them when the
    /// directory holds none. Existing files are never overwritten.
    public static func ensure(in directory: URL, hostnames: [String] = ["localhost"]) throws -> Files {
        let fm = FileManager.default
        var files = Files(
            caCertPath: directory.appendingPathComponent("ca.pem").path,
            caKeyPath: directory.appendingPathComponent("ca-key.pem").path,
            serverCertPath: directory.appendingPathComponent("server.pem").path,
            serverKeyPath: directory.appendingPathComponent("server-key.pem").path,
            created: false
        )
        let all = [files.caCertPath, files.caKeyPath, files.serverCertPath, files.serverKeyPath]
        let present = all.filter { fm.fileExists(atPath: $0) }
        if present.count == all.count { return files }
        if !present.isEmpty {
            throw LHError(
                .failedPrecondition,
                "the TLS directory \(directory.path) holds only some of the development CA's files (\(present.joined(separator: ", "))); remove them or configure a certificate"
            )
        }
        try fm.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])

        let ca = try makeCA(commonName: "lh-server development CA")
        let server = try issueServer(hostnames: hostnames, by: ca)
        try write(ca.certificatePEM, to: files.caCertPath, mode: 0o644)
        try write(ca.keyPEM, to: files.caKeyPath, mode: 0o600)
        try write(server.certificatePEM, to: files.serverCertPath, mode: 0o644)
        try write(server.keyPEM, to: files.serverKeyPath, mode: 0o600)
        files.created = true
        return files
    }

    /// A development CA shared by the servers of a cluster: the CA's files
    /// are in `caDirectory` (made by the first server to start, under a file
    /// lock, never overwritten), each server's own certificate, issued by
    /// it, in `directory`. Clients then trust every server with one
    /// `LHC_CA_CERT` (`caDirectory/ca.pem`).
    public static func ensure(in directory: URL, sharedCA caDirectory: URL, hostnames: [String] = ["localhost"]) throws
        -> Files
    {
        let fm = FileManager.default
        try fm.createDirectory(
            at: caDirectory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let caCert = caDirectory.appendingPathComponent("ca.pem").path
        let caKey = caDirectory.appendingPathComponent("ca-key.pem").path
        let lockPath = caDirectory.appendingPathComponent(".lock").path
        let fd = open(lockPath, O_CREAT | O_RDWR, 0o600)
        guard fd >= 0 else {
            throw LHError(.failedPrecondition, "cannot open \(lockPath): \(String(cString: strerror(errno)))")
        }
        defer { close(fd) }
        flock(fd, LOCK_EX)
        defer { flock(fd, LOCK_UN) }
        switch (fm.fileExists(atPath: caCert), fm.fileExists(atPath: caKey)) {
        case (true, true):
            break
        case (false, false):
            let ca = try makeCA(commonName: "lh-server cluster development CA")
            try write(ca.keyPEM, to: caKey, mode: 0o600)
            try write(ca.certificatePEM, to: caCert, mode: 0o644)
        default:
            throw LHError(
                .failedPrecondition,
                "the shared CA directory \(caDirectory.path) holds only one of ca.pem and ca-key.pem; remove it or restore both"
            )
        }
        var files = Files(
            caCertPath: caCert, caKeyPath: caKey,
            serverCertPath: directory.appendingPathComponent("server.pem").path,
            serverKeyPath: directory.appendingPathComponent("server-key.pem").path, created: false)
        let issuerPath = directory.appendingPathComponent("issuer.pem").path
        let caPEM = try String(contentsOfFile: caCert, encoding: .utf8)
        if fm.fileExists(atPath: files.serverCertPath) && fm.fileExists(atPath: files.serverKeyPath) {
            if (try? String(contentsOfFile: issuerPath, encoding: .utf8)) == caPEM { return files }
            throw LHError(
                .failedPrecondition,
                "the server certificate in \(directory.path) was not issued by the shared CA in \(caDirectory.path); remove \(directory.path) to have one issued"
            )
        }
        try fm.createDirectory(at: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
        let server = try issueServer(hostnames: hostnames, by: try loadCA(certPath: caCert, keyPath: caKey))
        try write(server.keyPEM, to: files.serverKeyPath, mode: 0o600)
        try write(server.certificatePEM, to: files.serverCertPath, mode: 0o644)
        try write(caPEM, to: issuerPath, mode: 0o644)
        files.created = true
        return files
    }

    /// A development server certificate for `hostnames`, 127.0.0.1 and ::1.
    static func issueServer(hostnames: [String], by ca: Issued) throws -> Issued {
        try issue(
            commonName: hostnames.first ?? "localhost", dnsNames: hostnames,
            ipAddresses: [[127, 0, 0, 1], [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1]],
            usages: [.serverAuth, .clientAuth], by: ca
        )
    }

    /// A certificate and its private key, PEM-encoded.
    public struct Issued: Sendable {
        public var certificatePEM: String
        public var keyPEM: String
        fileprivate var certificate: Certificate
        fileprivate var key: P256.Signing.PrivateKey
    }

    /// Makes a self-signed CA (ECDSA P-256, valid ten years).
    public static func makeCA(commonName: String) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let name = try DistinguishedName {
            CommonName(commonName); OrganizationName("littlehorse-swift")
        }
        let now = Date()
        let cert = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(10 * 365 * 86400),
            issuer: name,
            subject: name,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.isCertificateAuthority(maxPathLength: 0))
                Critical(KeyUsage(digitalSignature: true, keyCertSign: true, cRLSign: true))
            },
            issuerPrivateKey: .init(key)
        )
        return Issued(
            certificatePEM: try cert.serializeAsPEM().pemString, keyPEM: key.pemRepresentation, certificate: cert,
            key: key)
    }

    /// Issues a leaf certificate signed by `ca` (valid two years): for a
    /// server (`.serverAuth`) or for a client under mutual TLS (`.clientAuth`).
    public static func issue(
        commonName: String,
        dnsNames: [String] = [],
        ipAddresses: [[UInt8]] = [],
        usages: [ExtendedKeyUsage.Usage],
        by ca: Issued
    ) throws -> Issued {
        let key = P256.Signing.PrivateKey()
        let subject = try DistinguishedName {
            CommonName(commonName); OrganizationName("littlehorse-swift")
        }
        let names: [GeneralName] =
            dnsNames.map { .dnsName($0) }
            + ipAddresses.map { .ipAddress(ASN1OctetString(contentBytes: ArraySlice($0))) }
        let now = Date()
        let cert = try Certificate(
            version: .v3,
            serialNumber: Certificate.SerialNumber(),
            publicKey: .init(key.publicKey),
            notValidBefore: now.addingTimeInterval(-3600),
            notValidAfter: now.addingTimeInterval(2 * 365 * 86400),
            issuer: ca.certificate.subject,
            subject: subject,
            signatureAlgorithm: .ecdsaWithSHA256,
            extensions: try Certificate.Extensions {
                Critical(BasicConstraints.notCertificateAuthority)
                Critical(KeyUsage(digitalSignature: true, keyEncipherment: true))
                try ExtendedKeyUsage(usages)
                if !names.isEmpty { SubjectAlternativeNames(names) }
            },
            issuerPrivateKey: .init(ca.key)
        )
        return Issued(
            certificatePEM: try cert.serializeAsPEM().pemString, keyPEM: key.pemRepresentation, certificate: cert,
            key: key)
    }

    /// Loads a CA written by ``ensure(in:hostnames:)`` (to issue client
    /// certificates with it).
    public static func loadCA(certPath: String, keyPath: String) throws -> Issued {
        let certPEM = try String(contentsOfFile: certPath, encoding: .utf8)
        let keyPEM = try String(contentsOfFile: keyPath, encoding: .utf8)
        let cert = try Certificate(pemEncoded: certPEM)
        let key = try P256.Signing.PrivateKey(pemRepresentation: keyPEM)
        return Issued(certificatePEM: certPEM, keyPEM: keyPEM, certificate: cert, key: key)
    }

    private static func write(_ text: String, to path: String, mode: Int) throws {
        guard
            FileManager.default.createFile(
                atPath: path, contents: Data(text.utf8), attributes: [.posixPermissions: mode])
        else {
            throw LHError(.internal, "cannot write \(path)")
        }
    }
}
