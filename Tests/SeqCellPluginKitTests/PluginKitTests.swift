import CSeqCell
import SeqCellPluginKit
import XCTest

#if canImport(Glibc)
import Glibc
#endif

/// Unit tests of SeqCellPluginKit, the helpers linked into each Swift cell plugin: the
/// workspace carver, option checking, ABI version negotiation at the entry point, the C
/// descriptors it builds (options, parameters, roles, gate orders, ABI 1.2 init specs), and
/// the shared backward tail. The test bundle links its own copy of the kit; the built-in
/// plugins keep theirs (their exports are protected, PluginSymbolTests). Expected values are
/// written out by hand or computed here with plain loops, never by the kit.
final class PluginKitTests: XCTestCase {
    override func setUp() {
        super.setUp()
        // The kit's sgemm goes through the host table the entry point keeps.
        XCTAssertEqual(enterWithTestHost(), SEQCELL_OK)
    }

    // MARK: - Workspace carver

    func testCarverAlignsEveryArrayTo64BytesInRequestOrder() {
        var measure = WorkspaceCarver(base: nil)
        _ = measure.floats(3)           // [0, 12)
        _ = measure.floats(2, 5)        // starts at 64: [64, 104)
        _ = measure.floats(count: 0)    // starts at 128, empty
        _ = measure.floats(16)          // starts at 128: [128, 192)
        XCTAssertEqual(measure.bytes, 192)

        let base = UnsafeMutableRawPointer.allocate(byteCount: 192, alignment: 64)
        defer { base.deallocate() }
        var carve = WorkspaceCarver(base: base)
        let a = carve.floats(3), b = carve.floats(2, 5), c = carve.floats(count: 0), d = carve.floats(16)
        XCTAssertEqual(carve.bytes, 192, "carving and measuring must agree")
        XCTAssertEqual([a, b, c, d].map { UnsafeRawPointer(base).distance(to: UnsafeRawPointer($0)) }, [0, 64, 128, 128])
        for p in [a, b, c, d] { XCTAssertEqual(UInt(bitPattern: p) % 64, 0) }
    }

    func testCarverSaturatesInsteadOfOverflowing() {
        var product = WorkspaceCarver(base: nil)
        _ = product.floats(1 << 40, 1 << 40)  // 2^80 floats
        XCTAssertEqual(product.bytes, Int.max)
        _ = product.floats(1)  // stays saturated: no wrap-around to a small size
        XCTAssertEqual(product.bytes, Int.max)

        var bytes = WorkspaceCarver(base: nil)
        _ = bytes.floats(count: 1 << 62)  // the count fits, its 4-byte size does not
        XCTAssertEqual(bytes.bytes, Int.max)

        var negative = WorkspaceCarver(base: nil)
        _ = negative.floats(-5, 3)  // a negative factor counts as zero
        XCTAssertEqual(negative.bytes, 0)

        // With a base, an overflowed request gets a harmless pointer, never base + garbage.
        let base = UnsafeMutableRawPointer.allocate(byteCount: 64, alignment: 64)
        defer { base.deallocate() }
        var carve = WorkspaceCarver(base: base)
        let p = carve.floats(Int.max, 2)
        XCTAssertEqual(carve.bytes, Int.max)
        let offset = UnsafeRawPointer(base).distance(to: UnsafeRawPointer(p))
        XCTAssertFalse((0..<64).contains(offset), "an overflowed request pointed into the workspace")
    }

    func testCarvedWorkspaceSizeIsWhatCarveMeasures() {
        let k = ToyKernel(inputSize: 3, hidden: 5, bias: true, split: false)
        // ToyKernel carves [T, B, H] states and [T, B, 2H] recurrent-bias gradients, each 64-aligned.
        func expected(_ T: Int, _ B: Int) -> Int { (T * B * 5 * 4 + 63) / 64 * 64 + T * B * 10 * 4 }
        XCTAssertEqual(k.workspaceBytes(T: 1, B: 1, training: true), expected(1, 1))
        XCTAssertEqual(k.workspaceBytes(T: 7, B: 3, training: false), expected(7, 3))
    }

    // MARK: - Options

    func testValidOptionsAreReadInDescriptorOrder() throws {
        let c = try makeConfig(input: 3, hidden: 4, options: [5, 0.25, 2])
        XCTAssertEqual(c.inputSize, 3)
        XCTAssertEqual(c.hiddenSize, 4)
        XCTAssertEqual(c.options, [5, 0.25, 2])
        // The bounds themselves are valid.
        XCTAssertEqual(try makeConfig(input: 1, hidden: 1, options: [0, 1, 0]).options, [0, 1, 0])
    }

    func testEachOptionKindRejectsBadValuesByName() {
        assertConfigError([2.5, 0.5, 0], "toy: option 'steps' must be an integer in 0...5 (got 2.5)")
        assertConfigError([6, 0.5, 0], "toy: option 'steps' must be an integer in 0...5 (got 6.0)")
        assertConfigError([1, 1.5, 0], "toy: option 'rate' must be in 0.0...1.0 (got 1.5)")
        assertConfigError([1, .nan, 0], "toy: option 'rate' must be in 0.0...1.0 (got nan)")
        assertConfigError([1, 0.5, 3], "toy: option 'mode' must be one of plain, split, both (got index 3.0)")
        assertConfigError([1, 0.5, 0.5], "toy: option 'mode' must be one of plain, split, both (got index 0.5)")
        assertConfigError([1, 0.5, -.infinity], "toy: option 'mode' must be one of plain, split, both (got index -inf)")
    }

    /// The kit receives options by position; names are resolved by the host (an unknown name
    /// is the host's error: LayerTests, CLITests). What reaches the kit with a wrong count or
    /// no values is refused with the counts.
    func testWrongOptionCountAndNullOptionsAreRefused() {
        assertConfigError([1, 0.5], "toy: expected 3 option values, got 2")
        assertConfigError([1, 0.5, 0, 7], "toy: expected 3 option values, got 4")
        var config = seqcell_config()
        config.struct_size = UInt32(MemoryLayout<seqcell_config>.size)
        config.num_options = 3
        config.input_size = 2
        config.hidden_size = 2
        XCTAssertEqual(configError(&config), "toy: options is NULL")
    }

    func testSizesAndStructSizeAreChecked() {
        assertConfigError([1, 0.5, 0], "toy: input_size must be in 1...16777216 (got 0)", input: 0)
        assertConfigError([1, 0.5, 0], "toy: hidden_size must be in 1...16777216 (got 16777217)", hidden: (1 << 24) + 1)
        var config = seqcell_config()
        config.struct_size = 8
        XCTAssertEqual(configError(&config), "toy: config struct_size 8 is smaller than \(MemoryLayout<seqcell_config>.size)")
        do throws(CellError) {
            _ = try CellConfig(nil, specs: toyOptions, cellID: "toy")
            XCTFail("a NULL config was accepted")
        } catch {
            XCTAssertEqual(error.message, "toy: config is NULL")
        }
    }

    // MARK: - Entry point and version negotiation

    func testEntryRefusesAnotherMajorAndAnOlderMinorWithoutBuildingTheDescriptor() {
        var built = 0
        func plugin() -> UnsafePointer<seqcell_plugin> {
            built += 1
            return toyPlugin
        }
        var out: UnsafePointer<seqcell_plugin>? = nil
        var buffer = [CChar](repeating: 0x7f, count: 256)
        var status = pluginEntry(2, 0, testHost, &out, &buffer, buffer.count, plugin: plugin())
        XCTAssertEqual(status, SEQCELL_ERR_VERSION)
        XCTAssertEqual(text(buffer), "this plugin speaks SeqCell ABI 1.x; the host speaks 2.0")
        status = pluginEntry(1, 1, testHost, &out, &buffer, buffer.count, plugin: plugin())
        XCTAssertEqual(status, SEQCELL_ERR_VERSION)
        XCTAssertEqual(text(buffer), "this plugin needs a host of SeqCell ABI 1.2 or newer; the host speaks 1.1")
        status = pluginEntry(1, 2, nil, &out, &buffer, buffer.count, plugin: plugin())
        XCTAssertEqual(status, SEQCELL_ERR_INVALID_ARGUMENT)
        XCTAssertEqual(text(buffer), "host table and output pointer must not be NULL")
        XCTAssertNil(out)
        XCTAssertEqual(built, 0, "the descriptor was built although negotiation failed")

        // A newer minor is fine: fields are only appended.
        status = pluginEntry(1, 9, testHost, &out, &buffer, buffer.count, plugin: plugin())
        XCTAssertEqual(status, SEQCELL_OK)
        XCTAssertEqual(out, toyPlugin)
        XCTAssertEqual(built, 1)
    }

    func testEntryRefusesAHostTableTooSmallOrLackingServices() {
        var out: UnsafePointer<seqcell_plugin>? = nil
        var buffer = [CChar](repeating: 0, count: 256)
        var small = testHost.pointee
        small.struct_size = 24  // ends before sgemm
        var status = pluginEntry(1, 2, &small, &out, &buffer, buffer.count, plugin: toyPlugin)
        XCTAssertEqual(status, SEQCELL_ERR_VERSION)
        XCTAssertEqual(text(buffer), "host services table is too small (24 bytes) or lacks sgemm/aligned_alloc/aligned_free")
        var noGEMM = testHost.pointee
        noGEMM.sgemm = nil
        status = pluginEntry(1, 2, &noGEMM, &out, &buffer, buffer.count, plugin: toyPlugin)
        XCTAssertEqual(status, SEQCELL_ERR_VERSION)
        XCTAssertNil(out)
    }

    func testErrorMessagesAreTruncatedAndTerminatedInTheCallersBuffer() {
        var buffer = [CChar](repeating: 0x7f, count: 6)
        writeError("abcdefghij", into: &buffer, capacity: buffer.count)
        XCTAssertEqual(buffer, [97, 98, 99, 100, 101, 0])
        writeError("x", into: &buffer, capacity: 0)  // nothing may be written
        XCTAssertEqual(buffer[0], 97)
        writeError("anything", into: nil, capacity: 10)  // no buffer: no crash
    }

    // MARK: - Descriptors

    func testLibraryAndCellDescriptorsCarryTheRegistrations() throws {
        let p = toyPlugin.pointee
        XCTAssertEqual(p.struct_size, UInt32(MemoryLayout<seqcell_plugin>.size))
        XCTAssertEqual(p.abi_major, 1)
        XCTAssertEqual(p.abi_minor, SEQCELL_ABI_MINOR)
        XCTAssertEqual(String(cString: try XCTUnwrap(p.name)), "kit test plugin")
        XCTAssertEqual(p.num_cells, 2)
        let cells = try XCTUnwrap(p.cells)
        let ids = try (0..<2).map { String(cString: try XCTUnwrap(cells[$0]?.pointee.id)) }
        XCTAssertEqual(ids, ["toy", "toy_split"])

        let d = try XCTUnwrap(cells[0]).pointee
        XCTAssertEqual(d.struct_size, UInt32(MemoryLayout<seqcell_cell_desc>.size))
        XCTAssertEqual([d.version_major, d.version_minor, d.version_patch], [2, 5, 1])
        XCTAssertEqual(String(cString: try XCTUnwrap(d.description)), "a gate-matrix cell for the kit's tests")
        XCTAssertNil(d.create, "kit descriptors create through create_cell (ABI 1.2)")
        XCTAssertNotNil(d.create_cell)
        XCTAssertNotNil(d.user_data)
        XCTAssertNotNil(d.workspace_size_checked)
        XCTAssertEqual(d.flags & UInt64(SEQCELL_CELL_FROZEN_GRADIENTS), UInt64(SEQCELL_CELL_FROZEN_GRADIENTS))

        XCTAssertEqual(d.num_options, 3)
        let o = try XCTUnwrap(d.options)
        func name(_ i: Int) -> String { o[i].name.map { String(cString: $0) } ?? "" }
        XCTAssertEqual((0..<3).map(name), ["steps", "rate", "mode"])
        XCTAssertEqual([o[0].kind, o[1].kind, o[2].kind], [SEQCELL_OPTION_INT, SEQCELL_OPTION_FLOAT, SEQCELL_OPTION_CHOICE])
        XCTAssertEqual([o[0].min_value, o[0].max_value, o[0].default_value], [0, 5, 2])
        XCTAssertEqual([o[1].min_value, o[1].max_value, o[1].default_value], [0, 1, 0.5])
        XCTAssertEqual([o[2].min_value, o[2].max_value, o[2].default_value], [0, 2, 1])
        XCTAssertEqual(String(cString: try XCTUnwrap(o[2].choices)), "plain,split,both")
        XCTAssertNil(o[0].choices)
        for i in 0..<3 { XCTAssertEqual(o[i].struct_size, UInt32(MemoryLayout<seqcell_option_desc>.size)) }
    }

    func testCreatedCellLayoutHasParamsRolesGateOrdersAndInitSpecs() throws {
        let (desc, instance) = try create(cell: 0, input: 3, hidden: 4, options: [2, 0.5, 0])
        defer { desc.destroy?(instance) }
        let layout = try XCTUnwrap(desc.layout?(instance)).pointee
        XCTAssertEqual(layout.num_params, 5)
        XCTAssertEqual(layout.num_states, 1)
        XCTAssertEqual(layout.output_size, 8)
        let params = try XCTUnwrap(layout.params)
        func str(_ p: UnsafePointer<CChar>?) -> String { p.map { String(cString: $0) } ?? "<NULL>" }
        XCTAssertEqual((0..<5).map { str(params[$0].name) }, ["weight_ih", "weight_hh", "bias_ih", "bias_hh", "gain"])
        XCTAssertEqual((0..<5).map { params[$0].role },
                       [SEQCELL_ROLE_INPUT_WEIGHT, SEQCELL_ROLE_RECURRENT_WEIGHT, SEQCELL_ROLE_BIAS, SEQCELL_ROLE_BIAS,
                        SEQCELL_ROLE_OTHER])
        XCTAssertEqual((0..<5).map { params[$0].rank }, [2, 2, 1, 1, 1])
        XCTAssertEqual((0..<5).map { [params[$0].shape.0, params[$0].shape.1] }, [[8, 3], [8, 4], [8, 0], [8, 0], [4, 0]])
        // Two gates of H = 4 rows each: the gate order names as many blocks as the rows hold.
        for i in 0..<4 {
            let order = str(params[i].gate_order)
            XCTAssertEqual(order, "a,b")
            XCTAssertEqual(Int64(order.split(separator: ",").count) * 4, params[i].shape.0)
        }
        XCTAssertEqual(str(params[4].gate_order), "")
        // ABI 1.2 initialisation: by role unless the spec says otherwise.
        XCTAssertEqual((0..<5).map { params[$0].`init` },
                       [SEQCELL_INIT_ROLE, SEQCELL_INIT_UNIFORM, SEQCELL_INIT_ROLE, SEQCELL_INIT_CONSTANT, SEQCELL_INIT_ROLE])
        XCTAssertEqual([params[1].init_a, params[1].init_b], [-0.125, 0.25])
        XCTAssertEqual(params[3].init_a, 1.5)
        XCTAssertEqual((0..<5).map { params[$0].flags }, [0, 0, 0, 0, Int32(SEQCELL_PARAM_OPTIONAL)])
        for i in 0..<5 { XCTAssertEqual(params[i].struct_size, UInt32(MemoryLayout<seqcell_param_desc>.size)) }
        let state = try XCTUnwrap(layout.states).pointee
        XCTAssertEqual(str(state.name), "h")
        XCTAssertEqual(state.size, 4)
    }

    func testCreateAndWorkspaceErrorsComeBackAsStatusAndMessage() throws {
        let desc = try XCTUnwrap(toyPlugin.pointee.cells?[0]).pointee
        let createCell = try XCTUnwrap(desc.create_cell)
        var instance: UnsafeMutableRawPointer? = nil
        var buffer = [CChar](repeating: 0, count: 256)
        let status = withConfig(input: 3, hidden: 4, options: [9, 0.5, 0]) { config in
            createCell(toyPlugin.pointee.cells?[0], desc.user_data, config, &instance, &buffer, buffer.count)
        }
        XCTAssertEqual(status, SEQCELL_ERR_INVALID_ARGUMENT)
        XCTAssertEqual(text(buffer), "toy: option 'steps' must be an integer in 0...5 (got 9.0)")
        XCTAssertNil(instance)
        let noUserData = withConfig(input: 3, hidden: 4, options: [1, 0.5, 0]) { config in
            createCell(toyPlugin.pointee.cells?[0], nil, config, &instance, &buffer, buffer.count)
        }
        XCTAssertEqual(noUserData, SEQCELL_ERR_INVALID_ARGUMENT)
        XCTAssertEqual(text(buffer), "create_cell: user_data is NULL (not a descriptor of this library)")

        let (d, cell) = try create(cell: 0, input: 3, hidden: 4, options: [1, 0.5, 0])
        defer { d.destroy?(cell) }
        let sized = try XCTUnwrap(d.workspace_size_checked)
        var bytes = 0
        XCTAssertEqual(sized(cell, 2, 3, SEQCELL_MODE_TRAINING, &bytes, &buffer, buffer.count), SEQCELL_OK)
        XCTAssertEqual(bytes, ToyKernel(inputSize: 3, hidden: 4, bias: true, split: false).workspaceBytes(T: 2, B: 3, training: true))
        XCTAssertEqual(sized(cell, Int64.max, 3, SEQCELL_MODE_TRAINING, &bytes, &buffer, buffer.count), SEQCELL_ERR_INVALID_ARGUMENT)
        XCTAssertEqual(text(buffer), "the workspace for seq_len \(Int64.max), batch 3 overflows a 64-bit byte count")
        XCTAssertEqual(sized(cell, 2, 3, 7, &bytes, &buffer, buffer.count), SEQCELL_ERR_INVALID_ARGUMENT)
        XCTAssertEqual(text(buffer), "unknown mode 7")
    }

    // MARK: - Backward tail

    func testBackwardTailMatchesPlainSums() throws {
        for (cell, split) in [(0, false), (1, true)] {
            for bias in [true, false] {
                try checkBackwardTail(cell: cell, split: split, bias: bias, frozen: [])
            }
        }
    }

    /// ABI 1.2 frozen parameters: a NULL grad_params entry is skipped; every other gradient is
    /// what it is with nothing frozen.
    func testBackwardTailSkipsFrozenParameters() throws {
        try checkBackwardTail(cell: 0, split: false, bias: true, frozen: [1, 2])
        try checkBackwardTail(cell: 1, split: true, bias: true, frozen: [0, 3])
        try checkBackwardTail(cell: 1, split: true, bias: true, frozen: [0, 1, 2, 3])
    }

    /// Runs the toy cell's backward through its C descriptor with T = 3, B = 2, I = 3, H = 2
    /// (G = 4) and checks dX and every accumulated gradient against sums written out here.
    private func checkBackwardTail(cell: Int, split: Bool, bias: Bool, frozen: Set<Int>) throws {
        let (T, B, I, H) = (3, 2, 3, 2)
        let G = 2 * H, R = T * B
        let (desc, instance) = try create(cell: cell, input: I, hidden: H, options: [1, 0.5, bias ? 0 : 2])
        defer { desc.destroy?(instance) }
        let what = "cell \(cell) bias \(bias) frozen \(frozen.sorted())"
        func values(_ n: Int, _ seed: Int) -> [Float] { (0..<n).map { Float(($0 * 7 + seed) % 11) * 0.125 - 0.5 } }
        let x = values(R * I, 1), dG = values(R * G, 2)
        let wih = values(G * I, 3), whh = values(G * H, 4), bih = values(G, 5), bhh = values(G, 6), gain = values(H, 7)
        // Gradients accumulate: start from non-zero values. dX is overwritten: start from garbage.
        let start: [[Float]] = [[Float](repeating: 1, count: G * I), [Float](repeating: -1, count: G * H),
                                [Float](repeating: 2, count: G), [Float](repeating: -2, count: G), [Float](repeating: 0, count: H)]
        var grads = start
        var dx = [Float](repeating: .nan, count: R * I)
        let bytes = desc.workspace_size?(instance, Int64(T), Int64(B), SEQCELL_MODE_TRAINING) ?? 0
        let workspace = UnsafeMutableRawPointer.allocate(byteCount: max(bytes, 1), alignment: 64)
        defer { workspace.deallocate() }
        var message = [CChar](repeating: 0, count: 256)
        let paramValues = bias ? [wih, whh, bih, bhh, gain] : [wih, whh, gain]
        let gradIndex = bias ? [0, 1, 2, 3, 4] : [0, 1, 4]
        let status = try withPointers(paramValues) { params in
            try withMutablePointers(&grads) { all in
                let table: [UnsafeMutablePointer<Float>?] = gradIndex.map { frozen.contains($0) ? nil : all[$0] }
                return try x.withUnsafeBufferPointer { xp in
                    try dG.withUnsafeBufferPointer { gp in
                        try dx.withUnsafeMutableBufferPointer { dxp in
                            try table.withUnsafeBufferPointer { tp in
                                var a = seqcell_backward_args()
                                a.struct_size = UInt32(MemoryLayout<seqcell_backward_args>.size)
                                a.seq_len = Int64(T)
                                a.batch = Int64(B)
                                a.input = xp.baseAddress
                                a.params = params
                                a.grad_output = gp.baseAddress
                                a.grad_input = dxp.baseAddress
                                a.grad_params = tp.baseAddress
                                a.workspace = workspace
                                a.workspace_size = bytes
                                let backward = try XCTUnwrap(desc.backward)
                                return backward(instance, &a, &message, message.count)
                            }
                        }
                    }
                }
            }
        }
        XCTAssertEqual(status, SEQCELL_OK, "\(what): \(text(message))")

        // What the toy cell's workspace holds (ToyKernel.backward): S[r, h] for every row, a
        // second input S2 = S/2 + 1 for the split cell's upper rows, and dRec = 3 dG when split.
        let S = (0..<R * H).map { Float($0 % 5) * 0.25 - 0.5 }
        let S2 = S.map { $0 * 0.5 + 1 }
        let dRec = split ? dG.map { 3 * $0 } : dG
        var expectDX = [Float](repeating: 0, count: R * I)
        for r in 0..<R { for i in 0..<I { expectDX[r * I + i] = (0..<G).reduce(0) { $0 + dG[r * G + $1] * wih[$1 * I + i] } } }
        var expect = start
        for g in 0..<G {
            for i in 0..<I { expect[0][g * I + i] += (0..<R).reduce(0) { $0 + dG[$1 * G + g] * x[$1 * I + i] } }
            let s = split && g >= H ? S2 : S
            for h in 0..<H { expect[1][g * H + h] += (0..<R).reduce(0) { $0 + dG[$1 * G + g] * s[$1 * H + h] } }
            expect[2][g] += (0..<R).reduce(0) { $0 + dG[$1 * G + g] }
            expect[3][g] += (0..<R).reduce(0) { $0 + dRec[$1 * G + g] }
        }
        assertClose(dx, expectDX, "\(what): dX")
        for p in 0..<4 {
            // Frozen, or no biases: the buffer the test holds is untouched.
            let untouched = frozen.contains(p) || (!bias && p >= 2)
            assertClose(grads[p], untouched ? start[p] : expect[p], "\(what): gradient of parameter \(p)")
        }
        XCTAssertEqual(grads[4], start[4], "\(what): the tail touched a parameter it was not given")
    }
}

// MARK: - A toy cell and a test host

private let toyOptions = [
    OptionSpec(name: "steps", description: "an integer", kind: .int(min: 0, max: 5), defaultValue: 2),
    OptionSpec(name: "rate", description: "a real", kind: .float(min: 0, max: 1), defaultValue: 0.5),
    OptionSpec(name: "mode", description: "a choice; 'both' drops the biases", kind: .choice(["plain", "split", "both"]),
               defaultValue: 1),
]

/// Two gates of H rows (G = 2H) with PyTorch's four parameters and an extra one the tail must
/// leave alone; output [T, B, G]. Backward takes grad_output as the gate gradients and runs
/// the kit's backward tail; `split` feeds W_hh's upper rows another input and b_hh another
/// gradient, as a GRU with the reset gate before W_hn does.
private final class ToyKernel: CarvedWorkspace {
    let inputSize: Int
    let hidden: Int
    let bias: Bool
    let split: Bool
    let layout: LayoutStorage

    init(inputSize: Int, hidden H: Int, bias: Bool, split: Bool) {
        self.inputSize = inputSize
        self.hidden = H
        self.bias = bias
        self.split = split
        var params = [
            ParamSpec("weight_ih", role: SEQCELL_ROLE_INPUT_WEIGHT, shape: [2 * H, inputSize], gateOrder: "a,b",
                      description: "W_ih"),
            ParamSpec("weight_hh", role: SEQCELL_ROLE_RECURRENT_WEIGHT, shape: [2 * H, H], gateOrder: "a,b",
                      description: "W_hh", initializer: .uniform(lower: -0.125, upper: 0.25)),
        ]
        if bias {
            params += [
                ParamSpec("bias_ih", role: SEQCELL_ROLE_BIAS, shape: [2 * H], gateOrder: "a,b", description: "b_ih"),
                ParamSpec("bias_hh", role: SEQCELL_ROLE_BIAS, shape: [2 * H], gateOrder: "a,b", description: "b_hh",
                          initializer: .constant(1.5)),
            ]
        }
        params.append(ParamSpec("gain", role: SEQCELL_ROLE_OTHER, shape: [H], description: "unused", optional: true))
        layout = LayoutStorage(params: params, states: [StateSpec("h", size: H)], outputSize: 2 * H)
    }

    struct Buffers {
        var states: UnsafeMutablePointer<Float>  // [T, B, H]
        var dRec: UnsafeMutablePointer<Float>    // [T, B, 2H]
    }

    func carve(_ c: inout WorkspaceCarver, T: Int, B: Int, training: Bool) -> Buffers {
        Buffers(states: c.floats(T, B, hidden), dRec: c.floats(T, B, 2 * hidden))
    }

    func forward(_ f: ForwardCall) {
        f.output.update(repeating: 0, count: f.T * f.B * 2 * hidden)
    }

    func backward(_ g: BackwardCall) {
        let (R, H) = (g.T * g.B, hidden)
        let G = 2 * H
        let w = buffers(g)
        guard let dG = g.gradOutput else { return }
        for i in 0..<R * H { w.states[i] = Float(i % 5) * 0.25 - 0.5 }
        let parameters = GateParameterIndices.pytorch(bias: bias)
        if !split {
            g.accumulateGateGradients(dGates: dG, gates: G, inputSize: inputSize, parameters: parameters,
                                      recurrent: [.all(dG, gates: G, inputs: w.states, width: H)])
            return
        }
        // W_hh's upper rows multiply another input, S/2 + 1; b_hh's gradient is 3 dG.
        let upper = UnsafeMutablePointer<Float>.allocate(capacity: R * H)
        defer { upper.deallocate() }
        for i in 0..<R * H { upper[i] = w.states[i] * 0.5 + 1 }
        for i in 0..<R * G { w.dRec[i] = 3 * dG[i] }
        g.accumulateGateGradients(
            dGates: dG, gates: G, inputSize: inputSize, parameters: parameters,
            recurrent: [
                RecurrentGradientBlock(gradients: dG, leadingDimension: G, rows: 0..<H, inputs: w.states, width: H),
                RecurrentGradientBlock(gradients: dG + H, leadingDimension: G, rows: H..<G, inputs: upper, width: H),
            ],
            recurrentBias: w.dRec)
    }
}

private nonisolated(unsafe) let toyPlugin = makePlugin(name: "kit test plugin", cells: [
    CellRegistration(id: "toy", version: (2, 5, 1), description: "a gate-matrix cell for the kit's tests",
                     options: toyOptions) { c in
        ToyKernel(inputSize: c.inputSize, hidden: c.hiddenSize, bias: c.options[2] != 2, split: false)
    },
    CellRegistration(id: "toy_split", version: (1, 0, 0), description: "the same, recurrent gradient in two blocks",
                     options: toyOptions) { c in
        ToyKernel(inputSize: c.inputSize, hidden: c.hiddenSize, bias: c.options[2] != 2, split: true)
    },
])

/// A host table whose sgemm is a plain triple loop (row-major, as seqcell.h specifies).
private nonisolated(unsafe) let testHost: UnsafePointer<seqcell_host> = {
    var h = seqcell_host()
    h.struct_size = UInt32(MemoryLayout<seqcell_host>.size)
    h.abi_major = SEQCELL_ABI_MAJOR
    h.abi_minor = SEQCELL_ABI_MINOR
    h.sgemm = { _, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc in
        guard let a, let b, let c else { return }
        for i in 0..<Int(m) {
            for j in 0..<Int(n) {
                var sum: Float = 0
                for p in 0..<Int(k) {
                    let av = ta == SEQCELL_TRANS ? a[p * Int(lda) + i] : a[i * Int(lda) + p]
                    let bv = tb == SEQCELL_TRANS ? b[j * Int(ldb) + p] : b[p * Int(ldb) + j]
                    sum += av * bv
                }
                let old = beta == 0 ? 0 : beta * c[i * Int(ldc) + j]
                c[i * Int(ldc) + j] = alpha * sum + old
            }
        }
    }
    h.aligned_alloc = { _, alignment, size in
        var p: UnsafeMutableRawPointer? = nil
        return posix_memalign(&p, alignment, size) == 0 ? p : nil
    }
    h.aligned_free = { _, p in free(p) }
    h.log = { _, _, _ in }
    let p = UnsafeMutablePointer<seqcell_host>.allocate(capacity: 1)
    p.initialize(to: h)
    return UnsafePointer(p)
}()

private func enterWithTestHost() -> seqcell_status {
    var out: UnsafePointer<seqcell_plugin>? = nil
    var buffer = [CChar](repeating: 0, count: 256)
    return pluginEntry(SEQCELL_ABI_MAJOR, SEQCELL_ABI_MINOR, testHost, &out, &buffer, buffer.count, plugin: toyPlugin)
}

// MARK: - Helpers

private func text(_ buffer: [CChar]) -> String {
    String(decoding: buffer.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
}

private func withConfig<R>(input: Int, hidden: Int, options: [Double],
                           _ body: (UnsafePointer<seqcell_config>) throws -> R) rethrows -> R {
    try options.withUnsafeBufferPointer { o in
        var config = seqcell_config()
        config.struct_size = UInt32(MemoryLayout<seqcell_config>.size)
        config.num_options = Int32(options.count)
        config.input_size = Int64(input)
        config.hidden_size = Int64(hidden)
        config.options = o.baseAddress
        return try withUnsafePointer(to: &config) { try body($0) }
    }
}

private func makeConfig(input: Int, hidden: Int, options: [Double]) throws -> CellConfig {
    try withConfig(input: input, hidden: hidden, options: options) { try CellConfig($0, specs: toyOptions, cellID: "toy") }
}

private func configError(_ config: UnsafePointer<seqcell_config>) -> String? {
    do throws(CellError) {
        _ = try CellConfig(config, specs: toyOptions, cellID: "toy")
        return nil
    } catch {
        return error.message
    }
}

private func assertConfigError(_ options: [Double], _ message: String, input: Int = 3, hidden: Int = 4,
                               file: StaticString = #filePath, line: UInt = #line) {
    let got = withConfig(input: input, hidden: hidden, options: options) { configError($0) }
    XCTAssertEqual(got, message, file: file, line: line)
}

/// Creates cell `cell` of the toy plugin through its C descriptor.
private func create(cell: Int, input: Int, hidden: Int, options: [Double]) throws
    -> (seqcell_cell_desc, UnsafeMutableRawPointer) {
    let pointer = try XCTUnwrap(toyPlugin.pointee.cells?[cell])
    let desc = pointer.pointee
    let createCell = try XCTUnwrap(desc.create_cell)
    var instance: UnsafeMutableRawPointer? = nil
    var buffer = [CChar](repeating: 0, count: 256)
    let status = withConfig(input: input, hidden: hidden, options: options) { config in
        createCell(pointer, desc.user_data, config, &instance, &buffer, buffer.count)
    }
    XCTAssertEqual(status, SEQCELL_OK, text(buffer))
    return (desc, try XCTUnwrap(instance))
}

/// Runs `body` with a C array of pointers to each array's floats.
private func withPointers<R>(_ arrays: [[Float]], _ body: (UnsafePointer<UnsafePointer<Float>?>) throws -> R) rethrows -> R {
    let copies = arrays.map { a -> UnsafeMutablePointer<Float> in
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(a.count, 1))
        p.initialize(from: a, count: a.count)
        return p
    }
    defer { for p in copies { p.deallocate() } }
    let table: [UnsafePointer<Float>?] = copies.map { UnsafePointer($0) }
    return try table.withUnsafeBufferPointer { try body($0.baseAddress!) }
}

/// Runs `body` with a pointer to each array's floats; what `body` writes is copied back.
private func withMutablePointers<R>(_ arrays: inout [[Float]], _ body: ([UnsafeMutablePointer<Float>]) throws -> R) rethrows -> R {
    let copies = arrays.map { a -> UnsafeMutablePointer<Float> in
        let p = UnsafeMutablePointer<Float>.allocate(capacity: max(a.count, 1))
        p.initialize(from: a, count: a.count)
        return p
    }
    defer { for p in copies { p.deallocate() } }
    let result = try body(copies)
    for i in arrays.indices { arrays[i] = Array(UnsafeBufferPointer(start: copies[i], count: arrays[i].count)) }
    return result
}

private func assertClose(_ got: [Float], _ want: [Float], _ what: String, file: StaticString = #filePath, line: UInt = #line) {
    XCTAssertEqual(got.count, want.count, what, file: file, line: line)
    for (i, (g, w)) in zip(got, want).enumerated() where !(abs(g - w) <= 1e-5 * max(1, abs(w))) {
        XCTFail("\(what)[\(i)]: got \(g), want \(w)", file: file, line: line)
        return
    }
}

/// The chunked input projection's steps per chunk: the largest S with S·B·n·4 bytes ≤ 512 KB,
/// but at least 256 rows (S·B ≥ 256), capped by T (SEQCELL_PROJ_STEPS unset in the suite).
final class ChunkedProjectionStepsTests: XCTestCase {
    func testStepsPerChunkFollowTheRule() throws {
        guard getenv("SEQCELL_PROJ_STEPS") == nil else {
            throw XCTSkip("ChunkedProjectionStepsTests: SEQCELL_PROJ_STEPS is set, which fixes the steps")
        }
        // The benchmark configurations: A (LSTM H 256, B 32), B (LSTM H 256, B 16), C (GRU H 512,
        // B 64), E (LSTM H 1024, B 64).
        XCTAssertEqual(ChunkedInputProjection.steps(T: 100, B: 32, n: 1024), 8)
        XCTAssertEqual(ChunkedInputProjection.steps(T: 200, B: 16, n: 1024), 16)
        XCTAssertEqual(ChunkedInputProjection.steps(T: 50, B: 64, n: 1536), 4)
        XCTAssertEqual(ChunkedInputProjection.steps(T: 20, B: 64, n: 4096), 4)
        // The budget decides when it allows more than 256 rows: B 1, n 128 → 1024 steps.
        XCTAssertEqual(ChunkedInputProjection.steps(T: 5000, B: 1, n: 128), 1024)
        // Capped by T.
        XCTAssertEqual(ChunkedInputProjection.steps(T: 3, B: 1, n: 128), 3)
        XCTAssertEqual(ChunkedInputProjection.steps(T: 1, B: 300, n: 4096), 1)
    }
}
