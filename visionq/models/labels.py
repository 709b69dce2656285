"""COCO class names as Ultralytics spells them, whatever the model family."""

from __future__ import annotations

from collections.abc import Iterable

# Darknet's coco.names uses VOC-era spellings for six classes; users see one vocabulary everywhere.
_DARKNET_TO_ULTRALYTICS = {
    "motorbike": "motorcycle",
    "aeroplane": "airplane",
    "sofa": "couch",
    "tvmonitor": "tv",
    "diningtable": "dining table",
    "pottedplant": "potted plant",
}


def normalize_labels(names: Iterable[str]) -> list[str]:
    """Map Darknet spellings to Ultralytics' ones; other names pass through stripped."""
    out = []
    for raw in names:
        name = raw.strip()
        out.append(_DARKNET_TO_ULTRALYTICS.get(name, name))
    return out


def parse_names_file(text: str) -> list[str]:
    """A Darknet .names file: one class per line, blank lines ignored."""
    return normalize_labels(line for line in text.splitlines() if line.strip())
