/// An error of the store, with a code a caller can switch on and a message
/// that names the file, table or request.
public struct StoreError: Error, CustomStringConvertible, Sendable {
    /// What kind of error this is (a struct over a private enum, so codes
    /// can grow without breaking callers' `switch`es).
    public struct Code: Sendable, Hashable, CustomStringConvertible {
        fileprivate enum Base: String, Sendable, Hashable {
            case invalidArgument, unreadable, damaged, newerFormat, refused, failed
        }
        fileprivate let base: Base

        /// The request cannot be answered as asked (e.g. a search by a type
        /// the index does not hold).
        public static let invalidArgument = Code(base: .invalidArgument)
        /// The data directory's database cannot be opened or read.
        public static let unreadable = Code(base: .unreadable)
        /// The database failed its integrity check.
        public static let damaged = Code(base: .damaged)
        /// The database was written by a newer build or in another format.
        public static let newerFormat = Code(base: .newerFormat)
        /// A write was refused without being tried (an earlier one it built
        /// on failed).
        public static let refused = Code(base: .refused)
        /// A read or write failed.
        public static let failed = Code(base: .failed)

        public var description: String { base.rawValue }
    }

    public var code: Code
    public var message: String

    public init(_ code: Code, _ message: String) {
        self.code = code
        self.message = message
    }

    /// A failed read or write.
    public init(_ message: String) { self.init(.failed, message) }

    public var description: String { message }
}
