// swift-tools-version:6.0
import PackageDescription

// Every built-in cell is its own dynamic library (lib<product>.so). The host (SeqCell, the
// CLI, the tests) never links a cell: it finds these files at run time through the registry.
let cellPlugins: [(product: String, target: String)] = [
    ("seqcell_rnn", "RNNCell"),
    ("seqcell_lstm", "LSTMCell"),
    ("seqcell_gru", "GRUCell"),
]

let package = Package(
    name: "SeqCell",
    products: [
        .library(name: "SeqCell", targets: ["SeqCell"]),
        // For third-party cell authors' test suites: `import SeqCellConformance`.
        .library(name: "SeqCellConformance", targets: ["SeqCellConformance"]),
        .executable(name: "seqcell", targets: ["seqcell"]),
    ] + cellPlugins.map { .library(name: $0.product, type: .dynamic, targets: [$0.target]) },
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
        // TensorBoard event files (the generated messages in Sources/SeqCellTools/Report/Proto) and ONNX models
        // (Sources/SeqCellFormats/Interop/ONNX/Proto).
        .package(url: "https://github.com/apple/swift-protobuf", from: "1.39.0"),
    ],
    targets: [
        // The plugin ABI: one C header, shared by the host and every cell.
        .target(name: "CSeqCell", path: "Sources/CSeqCell"),
        // Host-only C helpers (dladdr), never linked into a plugin.
        .target(name: "CSeqCellHost", path: "Sources/CSeqCellHost"),
        // Open MPI, loaded at run time with dlopen (no build-time MPI): data-parallel training.
        .target(name: "CSeqCellMPI", path: "Sources/CSeqCellMPI"),
        // Debian's libhdf5-dev and libopenblas-dev.
        .systemLibrary(
            name: "CHDF5", path: "Sources/CHDF5", pkgConfig: "hdf5-serial",
            providers: [.apt(["libhdf5-dev"])]),
        // Host-only: walks untrusted HDF5 files in a child process before they are read.
        .target(name: "CSeqCellHDF5Check", dependencies: ["CHDF5"], path: "Sources/CSeqCellHDF5Check"),
        .systemLibrary(
            name: "CBLAS", path: "Sources/CBLAS", pkgConfig: "openblas",
            providers: [.apt(["libopenblas-dev"])]),
        // The Swift library, split along the ABI line and by concern. Arrows point down only:
        //   SeqCell (umbrella) -> SeqCellFormats -> SeqCellModel -> SeqCellHost -> SeqCellBase
        //   SeqCellConformance -> SeqCellHost;  SeqCellTools -> SeqCellFormats;  seqcell -> all
        // None of them knows a cell by name. Names shared across these targets are `package`;
        // what library users see is `public`.

        // What every layer needs and nothing else: Tensor storage, errors and message text,
        // the seeded random generator, the version.
        .target(name: "SeqCellBase"),
        // The cell host, the host side of the C ABI: plugin registry and loader, the Cell
        // wrapper, the host services handed to plugins (GEMM through OpenBLAS, allocation,
        // logging), the worker pool, CPU features.
        .target(
            name: "SeqCellHost",
            dependencies: [
                "CSeqCell", "CSeqCellHost", "CBLAS", "SeqCellBase",
                .product(name: "Logging", package: "swift-log"),
            ]),
        // The model core: layers, models, inference sessions, training (trainer, losses,
        // optimizers, metrics, data sets, the MPI communicator). Knows no file format: what
        // reads or writes a file lives in SeqCellFormats.
        .target(name: "SeqCellModel", dependencies: ["SeqCellHost", "CSeqCellMPI"]),
        // File formats: the HDF5 wrapper and checkpoints, npy, data files, safetensors, Keras,
        // PyTorch and ONNX import/export.
        .target(
            name: "SeqCellFormats",
            dependencies: [
                "SeqCellModel", "CHDF5", "CSeqCellHDF5Check",
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            // The .proto the committed onnx.pb.swift is generated from (scripts/gen-proto.sh).
            exclude: ["Interop/ONNX/Proto/onnx.proto"]),
        // The plugin conformance kit, its own library product: third-party cell authors run
        // it from their test suites (as swift-nio ships NIOTestUtils). Needs only the host.
        .target(name: "SeqCellConformance", dependencies: ["SeqCellHost", "CSeqCell", "CSeqCellHost"]),
        // What only the CLI (and the samples) need: benchmarks, training logs, SVG charts,
        // TensorBoard event files, the adding problem's demo data.
        .target(
            name: "SeqCellTools",
            dependencies: [
                "SeqCellFormats", "CBLAS",
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            // The .proto subsets the committed .pb.swift files are generated from (scripts/gen-proto.sh).
            exclude: ["Report/Proto/event.proto", "Report/Proto/summary.proto", "Report/Proto/histogram.proto"]),
        // The umbrella users import (`import SeqCell`): re-exports base, host, model and formats.
        .target(
            name: "SeqCell",
            dependencies: ["SeqCellBase", "SeqCellHost", "SeqCellModel", "SeqCellFormats"]),
        .executableTarget(
            name: "seqcell",
            dependencies: [
                "SeqCell", "SeqCellConformance", "SeqCellTools", "CSeqCellHost",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ]),
        // Vector kernels (activations, fused gate rows, a small-batch GEMM) for the built-in
        // cells, with run-time ISA dispatch. Plugin-only: linked statically into each cell's
        // .so (and the tests), never into the host; needs nothing beyond libc. FMA contraction
        // and the ISA are set by pragma and target attributes in the sources (no flags).
        .target(
            name: "CSeqCellKernels", path: "Sources/CSeqCellKernels", exclude: ["kernels_body.h"]),
        // Helpers for the Swift cells. Linked into each plugin .so, never into the host.
        .target(
            name: "SeqCellPluginKit", dependencies: ["CSeqCell", "CSeqCellKernels"]),
        // Runnable samples (samples/mgu is a C plugin built outside SwiftPM).
        .executableTarget(
            name: "adding-sample", dependencies: ["SeqCell", "SeqCellTools", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "samples/adding"),
        .executableTarget(
            name: "charlm-sample", dependencies: ["SeqCell", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "samples/charlm", exclude: ["alice.txt"]),
        .executableTarget(
            name: "finetune-sample", dependencies: ["SeqCell", "SeqCellTools", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "samples/finetune"),
        // Tests only: counts the test process's heap allocations (malloc and relatives
        // forwarded to glibc's own), for ForwardMemoryTests.
        .target(name: "CAllocationCounter", path: "Tests/CAllocationCounter"),
        // Tests mirror the targets. Plugins are never linked: the tests load the built .so
        // files through the registry, and a missing built-in cell fails the asking test.
        // Shared helpers (registry, fixtures, running the CLI, building C plugins): a regular
        // target that only test targets use. The fixtures live in Tests/Fixtures, outside
        // every target (the C plugin sources there are compiled with `cc` at test time).
        .target(
            name: "SeqCellTestSupport",
            dependencies: ["SeqCell", "SeqCellConformance", "CSeqCell"],
            path: "Tests/SeqCellTestSupport"),
        // Registry, loader, ABI negotiation and versions, symbol hygiene of the .so files.
        .testTarget(
            name: "SeqCellHostTests",
            dependencies: ["SeqCellTestSupport", "SeqCellConformance", "CSeqCell", "CSeqCellHost", "CHDF5"],
            path: "Tests/SeqCellHostTests"),
        // The built-in cells through the registry: RNN, LSTM, GRU, their options, bias-free
        // variants, NaN propagation through cells and kernels.
        .testTarget(
            name: "CellPluginTests",
            dependencies: ["SeqCellTestSupport", "SeqCellConformance", "CSeqCellKernels"],
            path: "Tests/CellPluginTests"),
        // Layers, models, gradients, training, embedding, inference sessions, data parallelism.
        .testTarget(
            name: "SeqCellModelTests",
            dependencies: ["SeqCellTestSupport", "SeqCellConformance", "SeqCellTools", "CAllocationCounter"],
            path: "Tests/SeqCellModelTests"),
        // Checkpoints, the HDF5 wrapper and hostile files, npy, safetensors, PyTorch/Keras/ONNX
        // interop, atomic writes and error messages.
        .testTarget(
            name: "SeqCellFormatsTests",
            dependencies: ["SeqCellTestSupport"],
            path: "Tests/SeqCellFormatsTests"),
        // The conformance kit on good and broken plugins.
        .testTarget(
            name: "SeqCellConformanceTests",
            dependencies: ["SeqCellTestSupport", "SeqCellConformance", "CSeqCell"],
            path: "Tests/SeqCellConformanceTests"),
        // Benchmarks and training logs (CSV, SVG, TensorBoard).
        .testTarget(
            name: "SeqCellToolsTests",
            dependencies: ["SeqCellTestSupport", "SeqCellTools"],
            path: "Tests/SeqCellToolsTests"),
        // The `seqcell` executable end to end.
        .testTarget(
            name: "SeqCellCLITests",
            dependencies: ["SeqCellTestSupport"],
            path: "Tests/SeqCellCLITests"),
        // The cells' vector kernels against libm, scalar references and OpenBLAS, per ISA.
        .testTarget(
            name: "CSeqCellKernelsTests",
            dependencies: ["SeqCellTestSupport", "CSeqCellKernels", "CBLAS"],
            path: "Tests/CSeqCellKernelsTests"),
        // The Swift cells' helper kit on its own: a copy linked into the tests for its unit tests
        // (the cells' own copies are inside their .so files, whose exported symbols are
        // protected: PluginSymbolTests).
        .testTarget(
            name: "SeqCellPluginKitTests",
            dependencies: ["SeqCellPluginKit", "CSeqCell"],
            path: "Tests/SeqCellPluginKitTests"),
    ] + cellPlugins.map {
        .target(
            name: $0.target, dependencies: ["CSeqCell", "SeqCellPluginKit", "CSeqCellKernels"],
            path: "Plugins/\($0.target)")
    }
)
