"""Models: where they come from (PyPI), how they become ONNX, and the cache they live in."""
