import LHEngine

/// States to free, owned by the one lane that frees them (a WfRun state is
/// a tree of many heap objects: freeing them on the serial commit thread
/// was ~10 % of that thread at saturation).
final class Graves: @unchecked Sendable {
    private var states: [[WfRunState]]
    init(_ states: [[WfRunState]]) { self.states = states }
    func free() { states = [] }
}
