"""Object detection: image bytes in, labelled boxes out, on ONNX Runtime."""
