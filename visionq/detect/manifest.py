"""A model's manifest: everything the detector needs besides the ONNX graph itself.

It belongs to the detector, which reads it; `visionq.models` writes it when a model is pulled,
imported or quantized.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from visionq.errors import ErrorCode, InvalidRequest

# The output layouts the detector decodes: Darknet [yolo] heads; Ultralytics' YOLOv5 (anchors with
# objectness) and YOLOv8/YOLO11 (anchor-free) raw heads, both NMS'd by visionq; and Ultralytics'
# end-to-end head (YOLOv10, YOLO26, any export with nms=True), whose rows are final boxes.
# How a quantized model's `source` starts: "quantized:<the fp32 original> (...)".
QUANTIZED_SOURCE = "quantized:"

Family = Literal["darknet", "yolov5", "yolov8", "end2end"]
Preprocess = Literal["resize", "letterbox"]


class InputSpec(BaseModel):
    """The network input and how an image is fitted into it."""

    model_config = ConfigDict(frozen=True)

    width: int = Field(gt=0)
    height: int = Field(gt=0)
    # Darknet trains and infers on a plain resize; Ultralytics on a letterbox (aspect kept, grey padding).
    preprocess: Preprocess


@dataclass(frozen=True, slots=True)
class DarknetHead:
    """One Darknet [yolo] head: the graph output holding it and its decoding constants."""

    output: str
    anchors: tuple[tuple[float, float], ...]  # in network-input pixels, for this head's mask only
    classes: int
    stride: int
    scale_x_y: float = 1.0
    new_coords: bool = False


class Manifest(BaseModel):
    """Written beside model.onnx as manifest.json."""

    model_config = ConfigDict(frozen=True)

    name: str
    family: Family
    input: InputSpec
    classes: list[str]
    heads: list[DarknetHead] = Field(default_factory=list)
    source: str
    license: str | None = None
    sha256: dict[str, str] = Field(default_factory=dict, description="of model.onnx and of the source files")
    created_at: datetime = Field(default_factory=lambda: datetime.now(UTC))

    @property
    def int8(self) -> bool:
        """Whether this is a quantized model (`visionq models quantize` makes them)."""
        return self.source.startswith(QUANTIZED_SOURCE)

    def class_ids(self, names: Sequence[str]) -> list[int]:
        """Class ids of `names`; unknown names are a request error that lists them."""
        index = {name: i for i, name in enumerate(self.classes)}
        unknown = [n for n in names if n not in index]
        if unknown:
            raise InvalidRequest(
                f"unknown class(es) for model '{self.name}': {', '.join(unknown)}",
                code=ErrorCode.UNKNOWN_CLASS,
            )
        return [index[n] for n in names]
