import SeqCell

extension RunCommand {
    /// `seqcell run --grad-output FILE`: forward with a tape, backward from the given output
    /// gradients, and everything written to one file.
    func runWithGradients(_ model: Model, _ inputs: RunInputs, gradientsFile: String) throws {
        let shape = [inputs.steps, inputs.batch, model.outputSize]
        let grads = try RunGradientInputs.read(path: gradientsFile, batchFirst: batchFirst, model: model, outputShape: shape)
        let result = try model.runWithGradients(inputs, grads)
        try writeRunOutputs(path: output, model: model, result: result.forward, batchFirst: batchFirst) { file in
            try writeRunGradients(result.gradients, model: model, batchFirst: batchFirst, into: try file.root)
        }
        let out = batchFirst ? [shape[1], shape[0], shape[2]] : shape
        print("wrote \(output): output \(out), \(inputs.tokens == nil ? "grad_input, " : "")initial-state gradients and \(model.namedParameters.count) parameter gradients")
    }
}
