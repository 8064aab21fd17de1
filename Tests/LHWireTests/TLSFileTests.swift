import Foundation
import LHProto
import Testing

@testable import LHWire

/// Certificate and key files that cannot be used are refused with the file
/// and the reason named, not with NIOSSL's bare `failedToLoadCertificate`.
@Suite final class TLSFileTests {
    let dir: URL
    let first: DevCertificateAuthority.Files
    let second: DevCertificateAuthority.Files

    init() throws {
        dir = FileManager.default.temporaryDirectory.appendingPathComponent("lh-tls-files-\(UUID().uuidString)")
        first = try DevCertificateAuthority.ensure(in: dir.appendingPathComponent("a"))
        second = try DevCertificateAuthority.ensure(in: dir.appendingPathComponent("b"))
    }

    deinit { try? FileManager.default.removeItem(at: dir) }

    func file(_ name: String, _ text: String) throws -> String {
        let url = dir.appendingPathComponent(name)
        try Data(text.utf8).write(to: url)
        return url.path
    }

    func message(_ body: () throws -> Void) -> String {
        do {
            try body()
            return "no error"
        } catch let error as LHError {
            return error.message
        } catch {
            return "not an LHError: \(error)"
        }
    }

    @Test func aMissingCertificateFileIsNamedWithTheSystemsReason() {
        let text = message { _ = try LHTLS.certificates(at: "/no/such/cert.pem", what: "the TLS certificate") }
        #expect(text == "cannot read the TLS certificate /no/such/cert.pem: No such file or directory", "\(text)")
        let directory = message { _ = try LHTLS.privateKey(at: dir.path, what: "the TLS key") }
        #expect(directory == "cannot read the TLS key \(dir.path): Is a directory", "\(directory)")
    }

    @Test func aFileThatIsNotPEMIsNamedAsSuch() throws {
        let path = try file("notes.txt", "hello\n")
        let text = message { _ = try LHTLS.certificates(at: path, what: "the client CA") }
        #expect(
            text == "the client CA \(path) holds no PEM certificate (no '-----BEGIN CERTIFICATE-----' line)", "\(text)")
        let key = message { _ = try LHTLS.privateKey(at: path, what: "the TLS key") }
        #expect(key.contains("holds no PEM private key"), "\(key)")
    }

    @Test func aCertificateAndKeyGivenTheWrongWayRoundAreCalledSwapped() {
        let cert = message { _ = try LHTLS.certificates(at: first.serverKeyPath, what: "the TLS certificate") }
        #expect(
            cert.contains("holds a private key, not a certificate (are the certificate and the key swapped?)"),
            "\(cert)")
        let key = message { _ = try LHTLS.privateKey(at: first.serverCertPath, what: "the TLS key") }
        #expect(key.contains("holds a certificate, not a private key"), "\(key)")
    }

    @Test func anEncryptedKeyIsRefusedByName() throws {
        let path = try file(
            "enc.pem", "-----BEGIN ENCRYPTED PRIVATE KEY-----\nMIIB\n-----END ENCRYPTED PRIVATE KEY-----\n")
        let text = message { _ = try LHTLS.privateKey(at: path, what: "the TLS key") }
        #expect(text == "the TLS key \(path) is encrypted; give the key without a passphrase", "\(text)")
    }

    @Test func aKeyOfAnotherCertificateIsNamedAsNotItsKey() {
        let text = message {
            _ = try LHTLS.makeServerContext(.init(certificatePath: first.serverCertPath, keyPath: second.serverKeyPath))
        }
        #expect(
            text == "the key \(second.serverKeyPath) is not the private key of the certificate \(first.serverCertPath)",
            "\(text)")
        let client = message {
            _ = try LHTLS.makeClientContext(
                .init(
                    caCertPath: first.caCertPath, clientCertPath: first.serverCertPath,
                    clientKeyPath: second.serverKeyPath))
        }
        #expect(client.contains("is not the private key of the certificate"), "\(client)")
    }

    @Test func matchingFilesMakeContexts() throws {
        _ = try LHTLS.makeServerContext(
            .init(certificatePath: first.serverCertPath, keyPath: first.serverKeyPath, clientCAPath: second.caCertPath))
        _ = try LHTLS.makeClientContext(.init(caCertPath: first.caCertPath))
        let ca = message { _ = try LHTLS.makeClientContext(.init(caCertPath: "/no/ca.pem")) }
        #expect(ca == "cannot read the CA certificate /no/ca.pem (LHC_CA_CERT): No such file or directory", "\(ca)")
    }
}
