import Foundation

/// Ids the server makes up (a RunWf or PutExternalEvent without one).
enum LHIds {
    /// A UUIDv7 (RFC 9562) as 32 lowercase hex digits, like LittleHorse's
    /// dashless uuids but in creation order: 48 bits of Unix milliseconds,
    /// then the version, 74 random bits and the variant. Rows keyed by a
    /// WfRun id (the WfRun, its TaskRuns, Variables, timers) are then
    /// appended at the end of their SQLite indexes instead of being inserted
    /// at random places, which touches far fewer pages as the tables grow.
    static func timeOrdered(now: Date = Date()) -> String {
        var random = SystemRandomNumberGenerator()
        let ms = UInt64(max(0, now.timeIntervalSince1970 * 1000)) & 0xFFFF_FFFF_FFFF
        let a: UInt64 = random.next()
        let b: UInt64 = random.next()
        // ms(48) | version 7 (4) | rand_a (12)
        let high = (ms << 16) | 0x7000 | (a & 0x0FFF)
        // variant 0b10 (2) | rand_b (62)
        let low = 0x8000_0000_0000_0000 | (b & 0x3FFF_FFFF_FFFF_FFFF)
        let digits = Array("0123456789abcdef".utf8)
        var out = [UInt8](repeating: 0, count: 32)
        for i in 0..<16 {
            out[i] = digits[Int((high >> UInt64(60 - 4 * i)) & 0xF)]
            out[16 + i] = digits[Int((low >> UInt64(60 - 4 * i)) & 0xF)]
        }
        return String(decoding: out, as: UTF8.self)
    }
}
