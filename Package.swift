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
        .executable(name: "seqcell", targets: ["seqcell"]),
    ] + cellPlugins.map { .library(name: $0.product, type: .dynamic, targets: [$0.target]) },
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/weichsel/ZIPFoundation", from: "0.9.19"),
        // TensorBoard event files (the generated messages in Sources/SeqCell/Report/Proto).
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
        // The core: tensors, registry, layers, models, checkpoints. Knows no cell by name.
        .target(
            name: "SeqCell",
            dependencies: [
                "CSeqCell", "CSeqCellHost", "CHDF5", "CSeqCellHDF5Check", "CBLAS", "CSeqCellMPI",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ZIPFoundation", package: "ZIPFoundation"),
                .product(name: "SwiftProtobuf", package: "swift-protobuf"),
            ],
            // The .proto subsets the committed .pb.swift files are generated from (scripts/gen-proto.sh).
            exclude: ["Report/Proto/event.proto", "Report/Proto/summary.proto", "Report/Proto/histogram.proto",
                      "Interop/ONNX/Proto/onnx.proto"]),
        .executableTarget(
            name: "seqcell",
            dependencies: [
                "SeqCell",
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
            name: "adding-sample", dependencies: ["SeqCell", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "samples/adding"),
        .executableTarget(
            name: "charlm-sample", dependencies: ["SeqCell", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "samples/charlm", exclude: ["alice.txt"]),
        .executableTarget(
            name: "finetune-sample", dependencies: ["SeqCell", .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "samples/finetune"),
        // Tests only: counts the test process's heap allocations (malloc and relatives
        // forwarded to glibc's own), for ForwardMemoryTests.
        .target(name: "CAllocationCounter", path: "Tests/CAllocationCounter"),
        .testTarget(
            name: "SeqCellTests",
            // SeqCellPluginKit only for its unit tests (PluginKitTests): the cells' own copies are
            // inside their .so files, whose exported symbols are protected (PluginSymbolTests).
            dependencies: ["SeqCell", "CSeqCellKernels", "CBLAS", "CAllocationCounter", "SeqCellPluginKit"],
            path: "Tests/SeqCellTests",
            // C sources of broken plugins; the tests compile them with `cc` at run time.
            exclude: ["Fixtures"]),
    ] + cellPlugins.map {
        .target(
            name: $0.target, dependencies: ["CSeqCell", "SeqCellPluginKit", "CSeqCellKernels"],
            path: "Plugins/\($0.target)")
    }
)
