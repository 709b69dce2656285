"""Class names: Darknet's .names files, and the COCO spellings users see whatever the model family."""

from __future__ import annotations

from collections.abc import Iterable

# Darknet's coco.names uses VOC-era spellings for six COCO classes; Ultralytics' COCO models use the
# current ones. A user filtering on "couch" must not need to know which family the model came from.
_DARKNET_TO_ULTRALYTICS = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "tvmonitor": "tv",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
}


def parse_names_file(text: str) -> list[str]:
    """A Darknet .names file: one class per line, stripped; blank lines ignored."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def coco_spelling(names: Iterable[str]) -> list[str]:
    """Darknet's COCO class names in Ultralytics' spelling. Only for Darknet's coco.names: any other
    model's classes are its author's, and stay as written."""
    return [_DARKNET_TO_ULTRALYTICS.get(name, name) for name in names]
