import SeqCell

extension RunCommand {
    /// `seqcell run --grad-output FILE`: forward with a tape, backward from the given output
    /// gradients, and everything written to one file.
    func runWithGradients(_ given: Model, _ inputs: RunInputs, gradientsFile: String) throws {
        var model = given
        if model.outputSteps == .last {
            // Gradients are taken of every step's output (grad_output [T, B, O]); the last step
            // is one of them.
            model.outputSteps = .all
            print("note: the model's output is its last step; with --grad-output, output and grad_output are every step's [T, B, O]")
        }
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
