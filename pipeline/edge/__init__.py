"""The edge path: ONNX Runtime models, the bit-packed kernel, benchmarks and deploy bundles."""
