// swift-tools-version:6.1
import PackageDescription

/// `LH_UNCHECKED_EXCLUSIVITY=1`: release builds of the server's hot modules
/// without run-time exclusivity checks (how the benchmarks and the server's
/// image build; docs/performance.md says why and what it gains).
let hotPath: [SwiftSetting] = Context.environment["LH_UNCHECKED_EXCLUSIVITY"] == "1"
    ? [.unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release))]
    : []

/// `LH_JEMALLOC=1`: lh-server linked with jemalloc (Debian's libjemalloc-dev);
/// the server's image and the benchmarks build this way (docs/performance.md).
let serverAllocator: [LinkerSetting] = Context.environment["LH_JEMALLOC"] == "1"
    ? [.linkedLibrary("jemalloc")]
    : []

let package = Package(
    name: "littlehorse-swift",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "lh-server", targets: ["lh-server"]),
        .executable(name: "lhctl", targets: ["lhctl"]),
        .executable(name: "lh-bench", targets: ["lh-bench"]),
        .library(name: "LHClient", targets: ["LHClient"]),
        .library(name: "LHWorker", targets: ["LHWorker"]),
        .library(name: "LHWorkflow", targets: ["LHWorkflow"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-protobuf.git", from: "1.39.0"),
        .package(url: "https://github.com/apple/swift-nio.git", from: "2.101.3"),
        .package(url: "https://github.com/apple/swift-nio-ssl.git", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras.git", from: "1.35.2"),
        .package(url: "https://github.com/apple/swift-argument-parser.git", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log.git", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle.git", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-certificates.git", from: "1.21.1"),
        .package(url: "https://github.com/apple/swift-crypto.git", from: "4.5.2"),
        .package(url: "https://github.com/apple/swift-asn1.git", from: "1.7.4"),
        .package(url: "https://github.com/groue/GRDB.swift.git", from: "7.10.0"),
        .package(url: "https://github.com/grpc/grpc-swift-2.git", from: "2.4.3"),
        .package(url: "https://github.com/grpc/grpc-swift-nio-transport.git", from: "2.9.2"),
        .package(url: "https://github.com/grpc/grpc-swift-protobuf.git", from: "2.4.1"),
        // The dashboard and /metrics (HTTPFront); its optional traits (swift-configuration) are not needed.
        .package(url: "https://github.com/hummingbird-project/hummingbird.git", from: "2.28.1", traits: []),
        .package(url: "https://github.com/apple/swift-metrics.git", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus.git", from: "2.4.1"),
        // The PostgreSQL store (--store postgres://...): several servers on one database.
        .package(url: "https://github.com/vapor/postgres-nio.git", from: "1.33.2"),
    ],
    targets: [
        // The data model: Swift generated from proto/ (Generated/, by
        // scripts/generate-proto.sh, never edited by hand) and hand-written
        // helpers over it (LittleHorse's JSON, fast encoding, variable types, LHError).
        .target(
            name: "LHProto",
            dependencies: [.product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: hotPath
        ),
        // The pure state machine: WfSpec validation and WfRun execution.
        .target(
            name: "LHEngine",
            dependencies: ["LHProto", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: hotPath
        ),
        // SQLite's default page cache behind a wrapper that spares most
        // commits a walk of the whole cache (C; Sources/LHSQLitePageCache/page_cache.c).
        .target(
            name: "LHSQLitePageCache",
            linkerSettings: [.linkedLibrary("sqlite3")]
        ),
        // The storage protocol and its SQLite backend.
        .target(
            name: "LHStore",
            dependencies: [
                "LHProto", "LHEngine", "LHSQLitePageCache",
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: hotPath
        ),
        // The PostgreSQL backend of the store protocol: fenced group commits
        // (one lh_commit call each), membership and partition leases.
        .target(
            name: "LHPostgresStore",
            dependencies: [
                "LHProto", "LHEngine", "LHStore",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            swiftSettings: hotPath
        ),
        // Our own envelope (proto/wire.proto), generated; never re-exported to SDK users.
        .target(
            name: "LHWireProto",
            dependencies: ["LHProto", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            swiftSettings: hotPath
        ),
        // Framing, TLS, hello, request/response correlation, heartbeats, dev CA.
        .target(
            name: "LHWire",
            dependencies: [
                "LHProto", "LHWireProto",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOExtras", package: "swift-nio-extras"),
                .product(name: "SwiftASN1", package: "swift-asn1"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "X509", package: "swift-certificates"),
                .product(name: "Crypto", package: "swift-crypto"),
            ],
            swiftSettings: hotPath
        ),
        // The server: group commit, dispatch, timers, connections, the admin
        // service, LittleHorse's gRPC service as a second door, and the
        // dashboard with /metrics as a third.
        .target(
            name: "LHServer",
            dependencies: [
                "LHProto", "LHWireProto", "LHWire", "LHEngine", "LHStore",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
                .product(name: "GRPCCore", package: "grpc-swift-2"),
                .product(name: "GRPCNIOTransportHTTP2", package: "grpc-swift-nio-transport"),
                .product(name: "GRPCProtobuf", package: "grpc-swift-protobuf"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ],
            swiftSettings: hotPath
        ),
        // Async client of the admin API.
        .target(
            name: "LHClient",
            dependencies: [
                "LHProto", "LHWireProto", "LHWire",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // Worker SDK: LHConfig, LHTaskWorker, WorkerContext.
        .target(
            name: "LHWorker",
            dependencies: [
                "LHClient", "LHProto", "LHWireProto", "LHWire", "LHWorkflow",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // The workflow DSL: Workflow, WorkflowThread, WfRunVariable.
        .target(name: "LHWorkflow", dependencies: ["LHProto"]),
        .executableTarget(
            name: "lh-server",
            dependencies: [
                "LHServer", "LHWire", "LHStore", "LHPostgresStore", "LHProto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ],
            linkerSettings: serverAllocator
        ),
        .executableTarget(
            name: "lhctl",
            dependencies: [
                "LHClient", "LHProto", "LHEngine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        // Seed 003's walkthrough: task workers and the registration of its WfSpec.
        .executableTarget(
            name: "collect-underpants-worker",
            dependencies: [
                "LHWorker",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Examples/collect-underpants/Worker"
        ),
        .executableTarget(
            name: "collect-underpants-register",
            dependencies: ["LHClient", "LHWorkflow", .product(name: "SwiftProtobuf", package: "swift-protobuf")],
            path: "Examples/collect-underpants/Register"
        ),
        // A configurable task worker process for the live tests.
        .executableTarget(
            name: "lh-test-worker",
            dependencies: [
                "LHWorker",
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "Logging", package: "swift-log"),
            ],
            path: "Tests/lh-test-worker"
        ),
        // The test kit: a real server in the test process (withTestServer).
        .target(
            name: "LHTestKit",
            dependencies: [
                "LHServer", "LHClient",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
            ]
        ),
        // Coverage-guided fuzz targets (libFuzzer) and their replayer:
        // scripts/fuzz.sh, docs/reliability.md.
        .executableTarget(
            name: "lh-fuzz",
            dependencies: [
                "LHServer", "LHEngine", "LHWire", "LHWireProto", "LHProto", "LHWorkflow",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            path: "Fuzz/lh-fuzz"
        ),
        // Benchmarks: swift run -c release lh-bench SCENARIO (docs/performance.md).
        .executableTarget(
            name: "lh-bench",
            dependencies: [
                "LHClient", "LHWorker", "LHWorkflow", "LHProto",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .testTarget(
            name: "LHProtoTests",
            dependencies: ["LHProto", "LHStore"],
            resources: [.copy("Fixtures")]
        ),
        .testTarget(
            name: "LHEngineTests",
            dependencies: ["LHEngine", "LHProto"]
        ),
        .testTarget(
            name: "LHWorkflowTests",
            dependencies: ["LHWorkflow", "LHProto", "LHEngine", "LHWorker"]
        ),
        .testTarget(
            name: "LHWorkerTests",
            dependencies: ["LHWorker", "LHProto"]
        ),
        .testTarget(
            name: "LHWireTests",
            dependencies: [
                "LHWire", "LHWireProto", "LHProto",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        .testTarget(
            name: "LHStoreTests",
            dependencies: [
                "LHStore", "LHPostgresStore", "LHEngine", "LHProto", "LHSQLitePageCache", "LHWire",
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ]
        ),
        .testTarget(
            name: "LHServerTests",
            dependencies: [
                "LHServer", "LHTestKit", "LHClient", "LHWire", "LHWireProto", "LHProto", "LHWorkflow", "LHWorker", "LHStore", "LHEngine",
                "LHPostgresStore",
                "lh-server", "lhctl", "lh-test-worker", "collect-underpants-worker", "collect-underpants-register", "lh-bench", "lh-fuzz",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
    ]
)
