/// A Bloom filter of WfRun ids: "surely not stored" without reading the
/// database. RunWf asks whether its id exists; for a new id (nearly every
/// RunWf) the answer then costs a few hashes instead of a read transaction.
/// It holds every id ever written since the store opened plus all ids
/// stored at opening; deleted ids stay in (a false "maybe" only costs the
/// read it would have cost anyway).
public struct IdFilter: Sendable {
    private var words: [UInt64]
    private let mask: UInt64
    private static let probes = 4

    /// `bits` is rounded up to a power of two. 2^24 bits (2 MB) keep false
    /// positives near 0.1 % up to a million ids.
    public init(bits: Int = 1 << 24) {
        var size = 64
        while size < bits { size <<= 1 }
        words = [UInt64](repeating: 0, count: size / 64)
        mask = UInt64(size - 1)
    }

    private static func hashes(_ id: String) -> (UInt64, UInt64) {
        var hasher = Hasher()
        hasher.combine(id)
        let a = UInt64(bitPattern: Int64(hasher.finalize()))
        // A second, independent-enough hash for double hashing (splitmix64 of the first).
        var z = a &+ 0x9E37_79B9_7F4A_7C15
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return (a, (z ^ (z >> 31)) | 1)
    }

    public mutating func insert(_ id: String) {
        let (a, b) = Self.hashes(id)
        for i in 0..<UInt64(Self.probes) {
            let bit = (a &+ i &* b) & mask
            words[Int(bit >> 6)] |= 1 << (bit & 63)
        }
    }

    public func mayContain(_ id: String) -> Bool {
        let (a, b) = Self.hashes(id)
        for i in 0..<UInt64(Self.probes) {
            let bit = (a &+ i &* b) & mask
            if words[Int(bit >> 6)] & (1 << (bit & 63)) == 0 { return false }
        }
        return true
    }
}
