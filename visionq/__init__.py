"""visionq: asynchronous object detection on Celery workers, YOLO on ONNX Runtime."""

__version__ = "0.1.0"
