"""ONNX/TFLite export, INT8 quantization, parity checks and signed model bundles."""
