import Foundation
import Testing

@testable import LHServer

/// Ids the server makes up: UUIDv7 as 32 lowercase hex digits, in creation order.
@Suite struct IdTests {
    @Test func madeUpIdsAreUUIDv7InCreationOrderAndUnique() {
        let t = Date(timeIntervalSince1970: 1_790_000_000.123)
        let id = LHIds.timeOrdered(now: t)
        #expect(id.count == 32)
        #expect(id.allSatisfy { "0123456789abcdef".contains($0) })
        let chars = Array(id)
        #expect(chars[12] == "7", "version nibble: \(id)")
        #expect("89ab".contains(chars[16]), "variant: \(id)")
        // The first 12 digits are the Unix milliseconds.
        #expect(UInt64(String(chars[0..<12]), radix: 16) == 1_790_000_000_123)
        // Later milliseconds sort later; many in one millisecond are distinct.
        #expect(LHIds.timeOrdered(now: t) < LHIds.timeOrdered(now: t.addingTimeInterval(0.002)))
        let many = Set((0..<10_000).map { _ in LHIds.timeOrdered(now: t) })
        #expect(many.count == 10_000)
    }
}
