"""The values the detector hands out: boxes, detections and one image's result."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Box:
    """A box in original-image pixels, in the orientation the user sees (EXIF applied)."""

    x1: float
    y1: float
    x2: float
    y2: float

    @property
    def area(self) -> float:
        return max(0.0, self.x2 - self.x1) * max(0.0, self.y2 - self.y1)

    def iou(self, other: Box) -> float:
        """Intersection over union with `other`: 1 for the same box, 0 for boxes that do not overlap."""
        w = max(0.0, min(self.x2, other.x2) - max(self.x1, other.x1))
        h = max(0.0, min(self.y2, other.y2) - max(self.y1, other.y1))
        inter = w * h
        union = self.area + other.area - inter
        return inter / union if union > 0 else 0.0


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
        box = {k: float(v) for k, v in data["box"].items()}
        return cls(str(data["label"]), int(data["class_id"]), float(data["confidence"]), Box(**box))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class DetectionResult:
    """What one image gave: its size as the user sees it, the detections and per-stage timings in ms."""

    width: int
    height: int
    detections: list[Detection]
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
