// A character-level language model: an embedding stage (character ids → vectors), an LSTM
// trained with truncated backprop through time over a bundled public-domain text (the opening of Chapter I of Lewis Carroll's "Alice's
// Adventures in Wonderland", 1865), saved as a checkpoint, then reloaded to sample text.
//   swift run -c release charlm-sample --steps 2000
// With --write-data FILE it instead writes the text as token data for the command line:
// 'input' int64 [chunk, N] (character ids, N windows) and 'targets' int64 [chunk, N] (the next
// character), for  seqcell new --embedding V:32 --layer lstm:128 --head V  and
// seqcell train --loss cross_entropy --target all.
import ArgumentParser
import Foundation
import SeqCell

@main
struct CharLMSample: ParsableCommand {
    @Option(help: "Training steps (each a chunk of --chunk characters from each of --streams streams).") var steps = 2000
    @Option(help: "Characters per chunk (the truncation length of BPTT).") var chunk = 32
    @Option(help: "Parallel streams through the text (the batch).") var streams = 16
    @Option(help: "Hidden units.") var hidden = 128
    @Option(help: "Width of each character's embedding vector.") var embeddingDim = 32
    @Option(help: "Characters to sample after training.") var sampleLength = 300
    @Option(help: "Sampling temperature.") var temperature = 0.7
    @Option(help: "The text to learn (default: the bundled Alice excerpt).") var text: String?
    @Option(help: "Where to save the model.") var output = "out/charlm.h5"
    @Option(help: "Write the text as token data (HDF5: input, targets [chunk, N] of character ids) and stop.") var writeData: String?

    func run() throws {
        let source = text ?? ((#filePath as NSString).deletingLastPathComponent as NSString).appendingPathComponent("alice.txt")
        let chars = Array(try String(contentsOfFile: source, encoding: .utf8))
        let vocab = Array(Set(chars)).sorted()
        let index = Dictionary(uniqueKeysWithValues: vocab.enumerated().map { ($1, $0) })
        let V = vocab.count
        print("\(chars.count) characters, vocabulary of \(V), from \(source)")
        if let writeData {
            // Non-overlapping windows of `chunk` characters, each predicting the next character.
            let N = (chars.count - 1) / chunk
            var x = [Int64](repeating: 0, count: chunk * N), y = x
            for n in 0..<N {
                for t in 0..<chunk {
                    x[t * N + n] = Int64(index[chars[n * chunk + t]]!)
                    y[t * N + n] = Int64(index[chars[n * chunk + t + 1]]!)
                }
            }
            try writeHDF5Atomically(to: writeData) { file in
                let root = try file.root
                try root.writeDataset("input", shape: [chunk, N], int64s: x)
                try root.writeDataset("targets", shape: [chunk, N], int64s: y)
                try root.setAttribute("vocabulary", String(vocab))
            }
            print("wrote \(writeData): input and targets [\(chunk), \(N)], vocabulary \(V)")
            return
        }

        let registry = PluginRegistry.standard()
        // Character ids go straight in: the embedding stage looks up each id's trainable vector.
        let model = try Model.build(embedding: EmbeddingSpec(vocabularySize: V, dimension: embeddingDim),
                                    layers: [LayerSpec(cell: "lstm", hiddenSize: hidden)],
                                    head: HeadSpec(outputSize: V), registry: registry, seed: 1)
        var config = TrainingConfig()
        config.loss = "cross_entropy"
        config.target = "all"
        config.learningRate = 0.005
        config.carryState = true
        var trainer = try Trainer(model: model, config: config)

        // Each stream reads its own stretch of the text; states carry from chunk to chunk.
        let span = (chars.count - 1) / streams
        let chunksPerSpan = max(span / chunk, 1)
        for step in 0..<steps {
            let k = step % chunksPerSpan
            if k == 0 { trainer.resetState() }
            var x = [Int32](repeating: 0, count: chunk * streams)
            var y = [Float](repeating: 0, count: chunk * streams)
            for t in 0..<chunk {
                for s in 0..<streams {
                    let pos = s * span + k * chunk + t
                    x[t * streams + s] = Int32(index[chars[pos]]!)
                    y[t * streams + s] = Float(index[chars[pos + 1]]!)
                }
            }
            let stats = try trainer.trainStep(Batch(tokens: TokenIDs(shape: [chunk, streams], ids: x),
                                                    targets: Tensor(shape: [chunk, streams], data: y)))
            if (step + 1) % max(steps / 10, 1) == 0 {
                print("step \(step + 1): cross-entropy \(String(format: "%.3f", stats.loss)) nats/char")
            }
        }
        try FileManager.default.createDirectory(atPath: (output as NSString).deletingLastPathComponent,
                                                withIntermediateDirectories: true)
        try trainer.checkpoint.save(to: output)
        print("saved \(output)")

        // Sample from the reloaded checkpoint, one character at a time, carrying the state.
        let loaded = try Checkpoint.load(from: output, registry: registry).model
        var rng = SplitMix64(seed: 42)
        var state: [[[Tensor?]]] = []
        var current: Character = "A"
        var out = String(current)
        for _ in 0..<sampleLength {
            let id = TokenIDs(shape: [1, 1], ids: [Int32(index[current]!)])
            let r = try loaded.forward(tokens: id, initialStates: state)
            state = r.finalStates.map { $0.map { $0.map { Optional($0) } } }
            let logits = r.output.data.map { Double($0) / temperature }
            let m = logits.max()!
            let weights = logits.map { exp($0 - m) }
            var u = Double(rng.uniform(0, 1)) * weights.reduce(0, +)
            var pick = V - 1
            for (i, w) in weights.enumerated() { u -= w; if u <= 0 { pick = i; break } }
            current = vocab[pick]
            out.append(current)
        }
        print("sample (temperature \(temperature)):\n\(out)")
    }
}
