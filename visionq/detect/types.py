"""The values the detector hands out: boxes, detections and one image's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Box:
    """A box in original-image pixels, in the orientation the user sees (EXIF applied)."""

    x1: float
    y1: float
    x2: float
    y2: float

    def to_dict(self) -> dict[str, float]:
        return {"x1": self.x1, "y1": self.y1, "x2": self.x2, "y2": self.y2}


@dataclass(frozen=True, slots=True)
class Detection:
    """One object found in an image."""

    label: str
    class_id: int
    confidence: float
    box: Box

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Detection:
        """The inverse of `to_dict` (detections are stored in the job row as JSON)."""
        box = data["box"]
        return cls(
            str(data["label"]),
            int(data["class_id"]),
            float(data["confidence"]),
            Box(float(box["x1"]), float(box["y1"]), float(box["x2"]), float(box["y2"])),
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "class_id": self.class_id,
            "confidence": self.confidence,
            "box": self.box.to_dict(),
        }


@dataclass(frozen=True, slots=True)
class DetectionResult:
    """What one image gave: its size as the user sees it, the detections and per-stage timings in ms."""

    width: int
    height: int
    detections: list[Detection]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "width": self.width,
            "height": self.height,
            "detections": [d.to_dict() for d in self.detections],
            "timings_ms": dict(self.timings_ms),
        }
