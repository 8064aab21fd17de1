import LHProto
import LHWire

/// PutWfSpec's versioning rules, as LittleHorse has them:
///
/// - a spec identical to the latest version (same threads, same entrypoint)
///   is that version: the put is idempotent, whatever `allowed_updates` says;
/// - a change that keeps the entrypoint's variables is a new revision of the
///   latest major version;
/// - a change of the entrypoint's variables (the WfSpec's interface) is a
///   new major version, revision 0;
/// - `allowed_updates` NO_UPDATES refuses any new version of an existing
///   WfSpec, MINOR_REVISION_UPDATES refuses a new major version.
enum WfSpecVersioning {
    enum Decision: Equatable, Sendable {
        /// The spec is the latest version already: answer it.
        case existing(Littlehorse_WfSpec)
        /// Store the spec under this new version.
        case new(Littlehorse_WfSpecId)
    }

    /// The version a PutWfSpec of `spec` (validated, named) gets, given the
    /// stored versions of its name in ascending order.
    static func decide(
        _ spec: Littlehorse_WfSpec, allowedUpdates: Littlehorse_AllowedUpdateType,
        versions: [Littlehorse_WfSpec]
    ) throws -> Decision {
        var id = Littlehorse_WfSpecId()
        id.name = spec.id.name
        guard let latest = versions.last else { return .new(id) }
        if latest.threadSpecs == spec.threadSpecs && latest.entrypointThreadName == spec.entrypointThreadName {
            return .existing(latest)
        }
        let newMajor = interface(of: latest) != interface(of: spec)
        switch allowedUpdates {
        case .noUpdates:
            throw LHError(.failedPrecondition, "WfSpec '\(id.name)' exists and allowed_updates is NO_UPDATES")
        case .minorRevisionUpdates where newMajor:
            throw LHError(
                .failedPrecondition,
                "WfSpec '\(id.name)': the change needs a new major version but allowed_updates is MINOR_REVISION_UPDATES"
            )
        default:
            break
        }
        id.majorVersion = newMajor ? latest.id.majorVersion + 1 : latest.id.majorVersion
        id.revision = newMajor ? 0 : latest.id.revision + 1
        return .new(id)
    }

    /// The variables a RunWf may set: those of the entrypoint thread.
    static func interface(of spec: Littlehorse_WfSpec) -> [Littlehorse_ThreadVarDef] {
        spec.threadSpecs[spec.entrypointThreadName]?.variableDefs ?? []
    }
}
