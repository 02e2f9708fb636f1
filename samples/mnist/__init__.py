"""The MNIST batch-scoring sample: Azure ML's mnist-classifier tutorial on batchfn."""
