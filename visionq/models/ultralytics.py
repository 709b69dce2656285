"""Reading an Ultralytics ONNX export (YOLOv5, YOLOv8, YOLO11): its layout and class names."""

from __future__ import annotations

import ast

import onnx

from visionq.errors import ModelError
from visionq.models.labels import normalize_labels
from visionq.models.manifest import Family, InputSpec

# Ultralytics' default export size, used when the graph's input has symbolic height/width.
_DEFAULT_IMGSZ = 640


def inspect_export(model: onnx.ModelProto) -> tuple[Family, InputSpec, list[str]]:
    """Family, input spec and class names of an Ultralytics detection export."""
    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get("task", "detect") != "detect":
        raise ModelError(f"this export is for task '{meta['task']}'; visionq runs detection models only")
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError("expected one image input and one output, as Ultralytics exports have")
    in_dims = _dims(inputs[0])
    out_dims = _dims(graph.output[0])
    if len(in_dims) != 4 or len(out_dims) != 3:
        raise ModelError(f"unexpected shapes: input {in_dims}, output {out_dims}")
    height, width = _input_size(in_dims, meta)
    names = _class_names(meta)
    nc = len(names)
    if out_dims[1] == 4 + nc:
        family: Family = "yolov8"
    elif out_dims[2] == 5 + nc:
        family = "yolov5"
    else:
        raise ModelError(
            f"output shape {out_dims} is neither YOLOv8/11 (1, 4+{nc}, N) nor YOLOv5 (1, N, 5+{nc})"
        )
    return family, InputSpec(width=width, height=height, preprocess="letterbox"), names


def _dims(value: onnx.ValueInfoProto) -> list[int]:
    """Static dimensions; -1 for symbolic ones."""
    return [d.dim_value if d.HasField("dim_value") else -1 for d in value.type.tensor_type.shape.dim]


def _input_size(dims: list[int], meta: dict[str, str]) -> tuple[int, int]:
    h, w = dims[2], dims[3]
    if h > 0 and w > 0:
        return h, w
    if "imgsz" in meta:
        size = ast.literal_eval(meta["imgsz"])
        return (int(size[0]), int(size[1])) if isinstance(size, list | tuple) else (int(size), int(size))
    return _DEFAULT_IMGSZ, _DEFAULT_IMGSZ


def _class_names(meta: dict[str, str]) -> list[str]:
    if "names" in meta:
        try:
            raw = ast.literal_eval(meta["names"])
        except (ValueError, SyntaxError) as exc:
            raise ModelError(f"the export's 'names' metadata is not readable: {exc}") from exc
        if isinstance(raw, dict):
            return normalize_labels(str(raw[k]) for k in sorted(raw))
        if isinstance(raw, list):
            return normalize_labels(str(v) for v in raw)
    raise ModelError("the export carries no 'names' metadata; re-export it with Ultralytics' exporter")
