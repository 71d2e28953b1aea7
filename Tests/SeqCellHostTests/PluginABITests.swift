import CHDF5
import CSeqCell
import Foundation
import XCTest
@testable import SeqCellBase
@testable import SeqCellHost
@testable import SeqCellModel
@testable import SeqCellFormats
@testable import SeqCellConformance
import SeqCellTestSupport

#if canImport(Glibc)
import Glibc
#endif

/// The host side of the plugin ABI against plugins built from Fixtures/plugins/*.c (issue 9):
/// structs read by their ABI 1.0 sizes, descriptor arrays by the stride the plugin declares,
/// plugin-declared sizes checked before allocation, and foreign tapes refused.
final class PluginABITests: XCTestCase {
    /// Loads one fixture library into a fresh registry; returns its cell types and problems.
    func load(_ source: String, defines: [String] = [], as name: String) throws -> (PluginRegistry, [PluginProblem]) {
        let folder = try temporaryFolder()
        let path = try buildFixture(source, defines: defines, in: folder, as: name)
        let registry = PluginRegistry()
        let problems = registry.load(path: path)
        return (registry, problems)
    }

    // MARK: - ABI 1.0 sizes

    func testHardCodedABI10SizesAreWhatTodaysStructsStartWith() {
        // Today's structs may only have grown from 1.0 (the frozen header's sizes are also
        // checked at compile time by Fixtures/plugins/abi_1_0.c).
        XCTAssertLessThanOrEqual(PluginABI.Size10.plugin, MemoryLayout<seqcell_plugin>.size)
        XCTAssertLessThanOrEqual(PluginABI.Size10.cellDesc, MemoryLayout<seqcell_cell_desc>.size)
        XCTAssertLessThanOrEqual(PluginABI.Size10.optionDesc, MemoryLayout<seqcell_option_desc>.size)
        XCTAssertLessThanOrEqual(PluginABI.Size10.paramDesc, MemoryLayout<seqcell_param_desc>.size)
        XCTAssertLessThanOrEqual(PluginABI.Size10.stateDesc, MemoryLayout<seqcell_state_desc>.size)
        XCTAssertLessThanOrEqual(PluginABI.Size10.layout, MemoryLayout<seqcell_layout>.size)
        XCTAssertEqual(MemoryLayout<seqcell_cell_desc>.offset(of: \seqcell_cell_desc.backward), PluginABI.Size10.cellDesc - 8)
    }

    func testCallArgumentsCarryAStructSizeEveryPluginSinceABI10Accepts() {
        // A plugin refuses call arguments smaller than the struct it was compiled against: the
        // host must write at least the 1.0 size, and exactly its own header's size. The
        // forward arguments grew at 1.3 (params_epoch) and only there.
        XCTAssertEqual(MemoryLayout<seqcell_forward_args>.offset(of: \seqcell_forward_args.params_epoch),
                       PluginABI.Size10.forwardArgs)
        XCTAssertEqual(MemoryLayout<seqcell_forward_args>.size, PluginABI.Size10.forwardArgs + 8)
        XCTAssertEqual(MemoryLayout<seqcell_backward_args>.size, PluginABI.Size10.backwardArgs)
        let x = StableBuffer<Float>([1, 2, 3, 4, 5, 6])
        let lengths = StableBuffer<Int32>([2, 1])
        let y = StableBuffer<Float>(repeating: 0, count: 4)
        let f = ABICall.forwardArgs(T: 2, B: 1, training: true, input: x.constPointer, lengths: lengths.constPointer,
                                    params: nil, initialStates: nil, output: y.pointer, finalStates: nil,
                                    workspace: nil, workspaceBytes: 64)
        XCTAssertEqual(Int(f.struct_size), MemoryLayout<seqcell_forward_args>.size)
        XCTAssertEqual(f.params_epoch, 0, "a training call carries no params_epoch")
        XCTAssertEqual(f.mode, SEQCELL_MODE_TRAINING)
        XCTAssertEqual(f.seq_len, 2)
        XCTAssertEqual(f.batch, 1)
        XCTAssertEqual(f.input, x.constPointer)
        XCTAssertEqual(f.lengths, lengths.constPointer)
        XCTAssertEqual(f.output, y.pointer)
        XCTAssertEqual(f.workspace_size, 64)
        let b = ABICall.backwardArgs(T: 3, B: 2, input: x.constPointer, lengths: nil, params: nil, initialStates: nil,
                                     output: y.constPointer, gradOutput: nil, gradFinalStates: nil, gradInput: nil,
                                     gradInitialStates: nil, gradParams: nil, workspace: nil, workspaceBytes: 0)
        XCTAssertEqual(Int(b.struct_size), PluginABI.Size10.backwardArgs)
        XCTAssertEqual(b.seq_len, 3)
        XCTAssertEqual(b.batch, 2)
        XCTAssertEqual(b.output, y.constPointer)
        XCTAssertNil(b.lengths)
    }

    func testPinningFillsOneTableOfAddressesWithNullsWhereAskedFor() {
        let arrays: [[Float]?] = [[1, 2], nil, [3]]
        let table = StableBuffer<UnsafePointer<Float>?>(repeating: UnsafePointer(bitPattern: 8), count: 3)
        let seen = ABICall.pin(3, { arrays[$0] }, into: table.pointer) {
            (table[0]?[1], table[1] == nil, table[2]?[0])
        }
        XCTAssertEqual(seen.0, 2)
        XCTAssertTrue(seen.1)
        XCTAssertEqual(seen.2, 3)
    }

    func testShortStructIsCopiedIntoAZeroedHostStruct() {
        // A struct declaring fewer bytes than the host's: the rest reads as zero, never as
        // whatever follows it in the plugin's memory.
        var bytes = [UInt8](repeating: 0xFF, count: 128)
        bytes.withUnsafeMutableBytes { $0.storeBytes(of: UInt32(16), as: UInt32.self) }
        let copied = bytes.withUnsafeBytes { PluginABI.copyUnchecked(seqcell_state_desc.self, from: $0.baseAddress!, bytes: 16) }
        XCTAssertEqual(copied.struct_size, 16)
        XCTAssertEqual(copied.size, 0, "bytes beyond struct_size must not be read")
    }

    func testPluginBuiltAgainstTheFrozenABI10HeaderLoadsAndRunsForwardAndBackward() throws {
        let (registry, problems) = try load("abi_1_0.c", as: "libseqcell_abi10.so")
        XCTAssertEqual(problems, [])
        let type = try registry.cellType("abi10")
        XCTAssertEqual(type.abiVersion.major, 1)
        XCTAssertEqual(type.abiVersion.minor, 0)
        let cell = try type.instantiate(inputSize: 3, hiddenSize: 2)
        XCTAssertEqual(cell.params.map(\.shape), [[2, 3], [2]])
        // h' = h + W x + b over two steps, by hand.
        let w = Tensor(shape: [2, 3], data: [1, 0, 0, 0, 1, 1])
        let b = Tensor(shape: [2], data: [0.5, -1])
        let x = Tensor(shape: [2, 1, 3], data: [1, 2, 3, -1, 0, 1])
        let r = try cell.forward(input: x, params: [w, b], training: true)
        XCTAssertEqual(r.output.data, [1.5, 4, 1, 4])
        let g = try cell.backward(tape: try XCTUnwrap(r.tape), gradOutput: Tensor(shape: [2, 1, 2], data: [1, 1, 1, 1]))
        XCTAssertEqual(g.params[1].data, [3, 3], "d/db: step 0 feeds both outputs, step 1 one")
        XCTAssertEqual(g.input?.data, [2, 2, 2, 1, 1, 1])
        // And the whole conformance kit agrees.
        let report = PluginConformance.validate(file: type.libraryPath)
        XCTAssert(report.passed, "\(report)")
    }

    // MARK: - Descriptor arrays from a later minor

    func testDescriptorsLargerThanTodaysAreReadWithTheDeclaredStride() throws {
        let (registry, problems) = try load("future_minor.c", as: "libseqcell_future.so")
        XCTAssertEqual(problems, [])
        let type = try registry.cellType("future")
        XCTAssertEqual(type.version, CellVersion(major: 2, minor: 3, patch: 4))
        XCTAssertEqual(type.abiVersion.minor, SEQCELL_ABI_MINOR + 1)
        XCTAssertEqual(type.summary, "fixture: descriptors from a later minor")
        XCTAssertEqual(type.options, [
            CellOption(name: "scale_rows", description: "rows of scale", kind: .int(min: 1, max: 8), defaultValue: .int(2)),
            CellOption(name: "flavour", description: "a choice", kind: .choice(["plain", "spiced", "sweet"]),
                       defaultValue: .choice("spiced")),
        ])
        let cell = try type.instantiate(inputSize: 3, hiddenSize: 4, options: ["scale_rows": .int(5)])
        XCTAssertEqual(cell.params.map(\.name), ["weight", "bias", "scale"])
        XCTAssertEqual(cell.params.map(\.shape), [[4, 3], [4], [5]])
        XCTAssertEqual(cell.params.map(\.role), [.inputWeight, .bias, .other])
        XCTAssertEqual(cell.params.map(\.gateOrder), ["a,b", "", ""])
        XCTAssertEqual(cell.states, [StateInfo(name: "h", size: 4), StateInfo(name: "c", size: 8)])
        XCTAssertEqual(cell.outputSize, 4)
        let h0 = Tensor(shape: [2, 8], data: (0..<16).map(Float.init))
        let r = try cell.forward(input: Tensor.zeros([3, 2, 3]),
                                 params: cell.params.map { Tensor.zeros($0.shape) }, initialStates: [nil, h0])
        XCTAssertEqual(r.finalStates[1].data, h0.data)
    }

    func testDescriptorArrayWhoseElementsDisagreeOnTheirSizeIsRefused() throws {
        let (_, problems) = try load("future_minor.c", defines: ["FX_MIXED_SIZES"], as: "libseqcell_future.so")
        XCTAssertEqual(problems.count, 1)
        XCTAssert(problems.first?.reason.contains(
            "cell 'future': option descriptor 1 declares struct_size \(MemoryLayout<seqcell_option_desc>.size) but element 0 declares 72; every element of an array must declare the same size") == true,
            "\(problems)")
    }

    // MARK: - Plugin-declared sizes

    /// Peak resident memory of this process, in bytes.
    func peakResidentBytes() -> Int {
        var usage = rusage()
        getrusage(RUSAGE_SELF.rawValue, &usage)
        return usage.ru_maxrss * 1024
    }

    func testParameterDeclaredAs2To62By2To62IsRefusedBeforeAllocation() throws {
        let before = peakResidentBytes()
        let (registry, problems) = try load("huge_sizes.c", defines: ["FX_HUGE_PARAM"], as: "libseqcell_huge.so")
        XCTAssertEqual(problems.count, 1)
        let reason = problems.first?.reason ?? ""
        XCTAssert(reason.contains("cell 'huge': invalid layout: parameter 'weight' has shape [4611686018427387904, 4611686018427387904]; every dimension must be in 1...2147483647"),
                  reason)
        XCTAssert(registry.cellTypes.isEmpty)
        XCTAssertLessThan(peakResidentBytes() - before, 256 << 20, "nothing large was allocated")
    }

    func testWorkspaceOfSizeMaxIsReportedAsBytesNotNegative() throws {
        let before = peakResidentBytes()
        let (registry, problems) = try load("huge_sizes.c", defines: ["FX_HUGE_WORKSPACE"], as: "libseqcell_huge.so")
        XCTAssertEqual(problems.count, 1)
        let reason = problems.first?.reason ?? ""
        XCTAssert(reason.contains("cell 'huge': workspace_size(T=1, B=1, training) asks for 18446744073709551615 bytes, more than the 1099511627776-byte (1 TiB) limit"),
                  reason)
        XCTAssertFalse(reason.contains("negative"), reason)
        XCTAssert(registry.cellTypes.isEmpty)
        XCTAssertLessThan(peakResidentBytes() - before, 256 << 20, "nothing large was allocated")
    }

    func testFloatCountOverflowAndCapAreErrors() {
        XCTAssertEqual(try PluginLimits.floatCount([3, 4, 5], what: "x"), 60)
        XCTAssertThrowsError(try PluginLimits.floatCount([1 << 31, 1 << 31, 1 << 31], what: "cell 'c': output [T, B, O]")) {
            XCTAssert("\($0)".contains("cell 'c': output [T, B, O] of 2147483648 × 2147483648 × 2147483648 floats is too large"), "\($0)")
        }
        XCTAssertThrowsError(try PluginLimits.floatCount([1 << 20, 1 << 19], what: "w")) {
            XCTAssert("\($0)".contains("needs 2199023255552 bytes, more than the 1099511627776-byte (1 TiB) limit"), "\($0)")
        }
        if let memory = PluginLimits.physicalMemory, memory < PluginLimits.maxBufferBytes {
            let floats = memory / 4 + 1
            XCTAssertThrowsError(try PluginLimits.floatCount([floats], what: "w")) {
                XCTAssert("\($0)".contains("more than this machine's memory (\(memory) bytes)"), "\($0)")
            }
        }
    }

    // MARK: - Host services called with bad arguments

    func testSgemmWithBadArgumentsFromAPluginSetsCToNaNInsteadOfCrashing() throws {
        let sgemm = try XCTUnwrap(HostServices.table.pointee.sgemm)
        let a: [Float] = [1, 2, 3, 4, 5, 6], b: [Float] = [1, 0, 0, 1, 1, 1]
        var c = [Float](repeating: 7, count: 4)
        // A good product first: [2, 3] x [3, 2].
        c.withUnsafeMutableBufferPointer { sgemm(nil, 0, 0, 2, 2, 3, 1, a, 3, b, 2, 0, $0.baseAddress, 2) }
        XCTAssertEqual(c, [4, 5, 10, 11])
        // lda 1 for a [2, 3] A, a NULL B, a negative size: refused, C is NaN.
        for call in [{ (p: UnsafeMutablePointer<Float>?) in sgemm(nil, 0, 0, 2, 2, 3, 1, a, 1, b, 2, 0, p, 2) },
                     { (p: UnsafeMutablePointer<Float>?) in sgemm(nil, 0, 0, 2, 2, 3, 1, a, 3, nil, 2, 0, p, 2) }] {
            c = [0, 0, 0, 0]
            c.withUnsafeMutableBufferPointer { call($0.baseAddress) }
            XCTAssert(c.allSatisfy(\.isNaN), "\(c)")
        }
        c = [1, 1, 1, 1]
        c.withUnsafeMutableBufferPointer { sgemm(nil, 0, 0, -2, 2, 3, 1, a, 3, b, 2, 0, $0.baseAddress, 2) }
        XCTAssertEqual(c, [1, 1, 1, 1], "a negative size writes nothing")
    }

    // MARK: - Foreign tapes

    func testBackwardRefusesATapeFromAnotherCell() throws {
        let rnn = try cellType("rnn")
        let a = try rnn.instantiate(inputSize: 3, hiddenSize: 4)
        let sameConfig = try rnn.instantiate(inputSize: 3, hiddenSize: 4)
        let wider = try rnn.instantiate(inputSize: 3, hiddenSize: 5)
        let gru = try cellType("gru").instantiate(inputSize: 3, hiddenSize: 4)
        var rng = TestRNG(seed: 3)
        let x = rng.tensor([2, 1, 3])
        let r = try a.forward(input: x, params: a.params.map { rng.tensor($0.shape) }, training: true)
        let tape = try XCTUnwrap(r.tape)
        for other in [sameConfig, wider, gru] {
            XCTAssertThrowsError(try other.backward(tape: tape, gradOutput: nil)) { error in
                let text = "\(error)"
                XCTAssert(text.contains("this tape comes from a forward call of another cell instance, cell 'rnn' (input 3, hidden 4"), text)
                XCTAssert(text.contains("backward must run on the cell whose forward made the tape"), text)
            }
        }
        // A refused tape is not used up: its own cell still runs backward once.
        XCTAssertNoThrow(try a.backward(tape: tape, gradOutput: rng.tensor([2, 1, 4])))
        XCTAssertThrowsError(try a.backward(tape: tape, gradOutput: nil))
    }
}

/// ABI 1.1 and 1.2 side by side: a plugin built against the frozen 1.1 header, and the
/// IndRNN sample, which uses everything 1.2 appended.
final class PluginABI12Tests: XCTestCase {
    func testPluginBuiltAgainstTheFrozenABI11HeaderLoadsAndNeverGetsANullGradient() throws {
        let folder = try temporaryFolder()
        let registry = PluginRegistry()
        XCTAssertEqual(registry.load(path: try buildFixture("abi_1_1.c", in: folder, as: "libseqcell_abi11.so")), [])
        let type = try registry.cellType("abi11")
        XCTAssertEqual(type.abiVersion.major, 1)
        XCTAssertEqual(type.abiVersion.minor, 1)
        let cell = try type.instantiate(inputSize: 3, hiddenSize: 2)
        XCTAssertFalse(cell.acceptsFrozenGradients)
        XCTAssertEqual(cell.params.map(\.initializer), [.role, .role])
        XCTAssertEqual(cell.params.map(\.optional), [false, false])
        // h' = h + W x + b over two steps, by hand.
        let w = Tensor(shape: [2, 3], data: [1, 0, 0, 0, 1, 1])
        let b = Tensor(shape: [2], data: [0.5, -1])
        let x = Tensor(shape: [2, 1, 3], data: [1, 2, 3, -1, 0, 1])
        let r = try cell.forward(input: x, params: [w, b], training: true)
        XCTAssertEqual(r.output.data, [1.5, 4, 1, 4])
        // The fixture refuses a NULL grad_params entry: freezing W must reach it as scratch.
        let g = try cell.backward(tape: try XCTUnwrap(r.tape), gradOutput: Tensor(shape: [2, 1, 2], data: [1, 1, 1, 1]),
                                  frozenParams: [0])
        XCTAssertEqual(g.params[0].data, [0, 0, 0, 0, 0, 0], "a frozen parameter's gradient reads as zeros")
        XCTAssertEqual(g.params[1].data, [3, 3], "d/db: step 0 feeds both outputs, step 1 one")
        XCTAssertEqual(g.input?.data, [2, 2, 2, 1, 1, 1])
        let report = PluginConformance.validate(file: type.libraryPath)
        XCTAssert(report.passed, "\(report)")
        let arguments = try XCTUnwrap(report.check("backward arguments", cell: "abi11"))
        XCTAssert(arguments.detail.contains("grad_params[0] NULL"), "a 1.1 cell must refuse it: \(arguments.detail)")
    }

    func indrnn() throws -> CellType {
        let file = try compileC(source: indrnnSource,
                                output: try temporaryFolder() + "/libseqcell_indrnn.so")
        let registry = PluginRegistry()
        XCTAssertEqual(registry.load(path: file), [])
        return try registry.cellType("indrnn")
    }

    func testParameterInitialisationAndOptionalFlagAreReadAndUsed() throws {
        let type = try indrnn()
        XCTAssertEqual(type.abiVersion.minor, SEQCELL_ABI_MINOR, "built against today's header")
        let cell = try type.instantiate(inputSize: 3, hiddenSize: 50)
        XCTAssertEqual(cell.params.map(\.name), ["weight_ih", "weight_hh", "bias_ih", "bias_hh"])
        XCTAssertEqual(cell.params.map(\.initializer), [.role, .uniform(lower: 0, upper: 1), .role, .constant(0)])
        XCTAssertEqual(cell.params.map(\.optional), [false, false, false, true])
        var rng = SplitMix64(seed: 5)
        let p = Model.initialParameters(cell, rng: &rng)
        let bound = 1 / Float(50).squareRoot()
        XCTAssert(p[0].data.allSatisfy { abs($0) <= bound }, "weight_ih by role: U(±1/√H)")
        XCTAssert(p[1].data.allSatisfy { $0 >= 0 && $0 <= 1 }, "u from U(0, 1)")
        XCTAssertGreaterThan(p[1].data.max() ?? 0, 0.5, "u is not drawn from the role's ±1/√H = ±\(bound)")
        XCTAssert(p[2].data.allSatisfy { abs($0) <= bound })
        XCTAssertEqual(p[3].data, [Float](repeating: 0, count: 50), "bias_hh: constant 0")
    }

    func testFrozenParametersGetNullAndTheOtherGradientsAreUnchanged() throws {
        let cell = try indrnn().instantiate(inputSize: 3, hiddenSize: 4)
        XCTAssertTrue(cell.acceptsFrozenGradients)
        var rng = TestRNG(seed: 9)
        let params = cell.params.map { rng.tensor($0.shape, scale: 0.5) }
        let x = rng.tensor([4, 2, 3])
        let gy = rng.tensor([4, 2, 4])
        func gradients(frozen: Set<Int>) throws -> Cell.Gradients {
            let r = try cell.forward(input: x, params: params, training: true)
            return try cell.backward(tape: try XCTUnwrap(r.tape), gradOutput: gy, frozenParams: frozen)
        }
        let all = try gradients(frozen: [])
        let some = try gradients(frozen: [0, 1])
        XCTAssert(all.params[0].data.contains { $0 != 0 } && all.params[1].data.contains { $0 != 0 })
        XCTAssertEqual(some.params[0].data, [Float](repeating: 0, count: 12))
        XCTAssertEqual(some.params[1].data, [Float](repeating: 0, count: 4))
        XCTAssertEqual(some.params[2].data, all.params[2].data)
        XCTAssertEqual(some.params[3].data, all.params[3].data)
        XCTAssertEqual(some.input?.data, all.input?.data)
        XCTAssertThrowsError(try gradients(frozen: [4])) { error in
            XCTAssert("\(error)".contains("frozen parameter index 4 is outside 0..<4"), "\(error)")
        }
    }

    func testWorkspaceSizeThatOverflowsIsAnErrorFromThePlugin() throws {
        let cell = try indrnn().instantiate(inputSize: 3, hiddenSize: 4)
        XCTAssertGreaterThan(try cell.requiredWorkspace(T: 5, B: 3, training: true), 0)
        XCTAssertThrowsError(try cell.requiredWorkspace(T: 1 << 40, B: 1 << 40, training: true)) { error in
            let text = "\(error)"
            XCTAssert(text.contains("cell 'indrnn': workspace_size(T=1099511627776, B=1099511627776, training) failed: "),
                      text)
            XCTAssert(text.contains("overflows a size_t"), text)
        }
    }

    func testLibraryThatNeedsABI12RefusesAnOlderHost() throws {
        let file = try compileC(source: indrnnSource,
                                output: try temporaryFolder() + "/libseqcell_indrnn.so")
        let handle = try XCTUnwrap(dlopen(file, RTLD_NOW | RTLD_LOCAL), String(cString: dlerror()))
        let entry = unsafeBitCast(try XCTUnwrap(dlsym(handle, SEQCELL_ENTRY_SYMBOL)), to: seqcell_entry_fn.self)
        var plugin: UnsafePointer<seqcell_plugin>? = nil
        var error = [CChar](repeating: 0, count: 256)
        let status = entry(1, 1, HostServices.table, &plugin, &error, error.count)
        XCTAssertEqual(status, SEQCELL_ERR_VERSION)
        XCTAssertNil(plugin)
        let message = error.withUnsafeBufferPointer { String(cString: $0.baseAddress!) }
        XCTAssertEqual(message, "indrnn needs a host of SeqCell ABI 1.2 or newer; the host speaks 1.1")
    }
}

/// A checkpoint may omit a parameter its cell declares optional (ABI 1.2): it reads as the
/// declared constant; a required one is still missing.
final class OptionalParameterCheckpointTests: XCTestCase {
    func testOmittedOptionalParameterReadsAsItsConstantAndARequiredOneIsAnError() throws {
        let folder = try temporaryFolder()
        let registry = PluginRegistry()
        XCTAssertEqual(registry.load(path: try compileC(source: indrnnSource,
                                                       output: folder + "/libseqcell_indrnn.so")), [])
        var model = try Model.build(inputSize: 3, layers: [LayerSpec(cell: "indrnn", hiddenSize: 4)], registry: registry,
                                    seed: 3)
        // A non-zero bias_hh, so that reading it back as 0 is visible.
        model.layers[0].cells[0].params[3] = Tensor(shape: [4], data: [0.5, -0.25, 1, 2])
        let path = folder + "/m.h5"
        try Checkpoint(model: model).save(to: path)
        let paths = model.namedParameters.map(\.path)
        XCTAssertEqual(paths, ["layers/00/forward/weight_ih", "layers/00/forward/weight_hh", "layers/00/forward/bias_ih",
                               "layers/00/forward/bias_hh"])
        func delete(_ name: String) {
            let file = H5Fopen(path, sc_h5f_acc_rdwr(), sc_h5p_default())
            XCTAssertGreaterThanOrEqual(file, 0)
            XCTAssertGreaterThanOrEqual(H5Ldelete(file, "/model/" + name, sc_h5p_default()), 0, name)
            XCTAssertGreaterThanOrEqual(H5Fclose(file), 0)
        }
        delete("layers/00/forward/bias_hh")
        let loaded = try Checkpoint.load(from: path, registry: registry).model
        XCTAssertEqual(loaded.layers[0].cells[0].params[3].data, [0, 0, 0, 0], "omitted bias_hh reads as its constant 0")
        for p in 0..<3 {
            XCTAssertEqual(loaded.layers[0].cells[0].params[p], model.layers[0].cells[0].params[p])
        }
        delete("layers/00/forward/bias_ih")
        XCTAssertThrowsError(try Checkpoint.load(from: path, registry: registry)) { error in
            XCTAssert("\(error)".contains("dataset 'bias_ih' is missing"), "\(error)")
        }
    }
}

/// ABI 1.2 parameter declarations are checked when a library loads (Fixtures/plugins/bad_init.c).
final class ParameterDeclarationTests: XCTestCase {
    func load(_ defines: [String]) throws -> (PluginRegistry, [PluginProblem]) {
        let folder = try temporaryFolder()
        let path = try buildFixture("bad_init.c", defines: defines, in: folder, as: "libseqcell_badinit.so")
        let registry = PluginRegistry()
        return (registry, registry.load(path: path))
    }

    func testValidOptionalConstantIsRead() throws {
        let (registry, problems) = try load([])
        XCTAssertEqual(problems, [])
        let cell = try registry.cellType("badinit").instantiate(inputSize: 2, hiddenSize: 3)
        XCTAssertEqual(cell.params[1].initializer, .constant(0.25))
        XCTAssertTrue(cell.params[1].optional)
        XCTAssertEqual(cell.params[1].omittedValue, 0.25)
        XCTAssertFalse(cell.acceptsFrozenGradients, "no cell flag declared")
    }

    func testBadDeclarationsAreRefusedNamingTheParameter() throws {
        let cases = [
            ("FX_BAD=1", "parameter 'bias' asks for a uniform initialisation in [1.0, 0.0]; the bounds must be finite with init_a <= init_b"),
            ("FX_BAD=2", "parameter 'bias' asks for the constant inf; it must be finite"),
            ("FX_BAD=3", "parameter 'bias' has init 7; known: 0 (by role), 1 (uniform), 2 (constant)"),
            ("FX_BAD=4", "parameter 'bias' has unknown flags 0x4"),
        ]
        for (define, expected) in cases {
            let (registry, problems) = try load([define])
            XCTAssertThrowsError(try registry.cellType("badinit"), define)
            XCTAssertEqual(problems.count, 1, define)
            let reason = problems.first?.reason ?? ""
            XCTAssert(reason.contains("cell 'badinit': invalid layout: " + expected), "\(define): \(reason)")
        }
    }
}

/// `seqcell plugins` shows what a cell declared beyond its roles (ABI 1.2).
final class PluginListingABI12Tests: TemporaryDirectoryTestCase {
    func testPluginsShowsDeclaredInitialisationAndOptionalParameters() throws {
        let file = try compileC(source: indrnnSource,
                                output: directory.appendingPathComponent("libseqcell_indrnn.so").path)
        let r = try runProgram(["plugins", "--path", file])
        XCTAssertEqual(r.status, 0, r.err)
        XCTAssert(r.out.contains("  param weight_ih [16, 8]\n"), r.out)
        XCTAssert(r.out.contains("  param weight_hh [16]  initialised uniform in [0.0, 1.0]\n"), r.out)
        XCTAssert(r.out.contains("  param bias_hh [16]  initialised constant 0.0  optional\n"), r.out)
    }
}
