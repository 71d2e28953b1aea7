// The library users import: `import SeqCell` brings the tensors and messages, the cell host
// (registry, loader, cells), the model core (layers, models, training) and the file formats
// (checkpoints, npy, safetensors, Keras, ONNX). The conformance kit is its own product
// (SeqCellConformance) and the CLI's tools are not part of the library.
@_exported import SeqCellBase
@_exported import SeqCellHost
@_exported import SeqCellModel
@_exported import SeqCellFormats
