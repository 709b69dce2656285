"""Reading an Ultralytics ONNX export (YOLOv5u/v8/11 raw heads, YOLOv5 anchor heads, end-to-end heads).

The layout comes from the output's shape and the export's metadata; the class names from its `names`
metadata, exactly as the model's author wrote them.
"""

from __future__ import annotations

import ast

import onnx

from visionq.detect.manifest import Family, InputSpec
from visionq.errors import ModelError

# Ultralytics' default export size, used when the graph's input has symbolic height/width.
_DEFAULT_IMGSZ = 640

# What to tell a user whose export visionq cannot read.
_REEXPORT = (
    "re-export the detection model with Ultralytics: `yolo export model=best.pt format=onnx` "
    "(add `nms=True` for an end-to-end output)"
)


def read_export(data: bytes, *, source: str) -> tuple[Family, InputSpec, list[str]]:
    """Family, input spec and class names of the Ultralytics export in `data` (read from `source`)."""
    try:
        model = onnx.load_model_from_string(data)
    except Exception as exc:  # onnx raises DecodeError and friends without a common base
        raise ModelError(f"{source} is not an ONNX model: {exc}") from exc
    return inspect_export(model)


def inspect_export(model: onnx.ModelProto) -> tuple[Family, InputSpec, list[str]]:
    """Family, input spec and class names of an Ultralytics detection export."""
    meta = {p.key: p.value for p in model.metadata_props}
    task = meta.get("task", "detect")
    if task != "detect":
        raise ModelError(f"this export is for task '{task}'; visionq runs detection models only: {_REEXPORT}")
    graph = model.graph
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ModelError(
            f"the export has {len(inputs)} input(s) and {len(graph.output)} output(s); a detection export "
            f"has one image input and one output: {_REEXPORT}"
        )
    in_dims = _dims(inputs[0])
    out_dims = _dims(graph.output[0])
    if len(in_dims) != 4 or len(out_dims) != 3:
        raise ModelError(f"unexpected shapes: input {in_dims}, output {out_dims}: {_REEXPORT}")
    if in_dims[0] > 1 or in_dims[1] not in (3, -1):
        raise ModelError(
            f"the input is {in_dims}; visionq feeds one RGB image at a time: {_REEXPORT} batch=1"
        )
    height, width = _input_size(in_dims, meta)
    names = _class_names(meta)
    family = _family(out_dims, len(names), meta)
    return family, InputSpec(width=width, height=height, preprocess="letterbox"), names


def _family(out_dims: list[int], nc: int, meta: dict[str, str]) -> Family:
    """The output layout: end-to-end when the export says so (or only that layout fits), else by shape."""
    if _flag(meta.get("end2end")) or _flag(_literal(meta.get("args", "{}"), "args").get("nms")):
        if out_dims[2] != 6:
            raise ModelError(f"an end-to-end export must output (1, N, 6) rows, not {out_dims}: {_REEXPORT}")
        return "end2end"
    if out_dims[1] == 4 + nc:
        return "yolov8"
    if out_dims[2] == 5 + nc:
        return "yolov5"
    if out_dims[2] == 6:
        return "end2end"
    raise ModelError(
        f"output shape {out_dims} is none of the layouts visionq reads for {nc} classes: YOLOv8/YOLO11 "
        f"(1, {4 + nc}, N), YOLOv5 (1, N, {5 + nc}) or end-to-end (1, N, 6): {_REEXPORT}"
    )


def _flag(value: object) -> bool:
    return value is True or (isinstance(value, str) and value.strip().lower() == "true")


def _literal(text: str, key: str) -> dict[str, object]:
    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError) as exc:
        raise ModelError(f"the export's '{key}' metadata is not readable ({exc}): {_REEXPORT}") from exc
    return value if isinstance(value, dict) else {}


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
    if "names" not in meta:
        raise ModelError(f"the export carries no 'names' metadata: {_REEXPORT}")
    try:
        raw = ast.literal_eval(meta["names"])
    except (ValueError, SyntaxError) as exc:
        raise ModelError(f"the export's 'names' metadata is not readable ({exc}): {_REEXPORT}") from exc
    if isinstance(raw, dict):
        return [str(raw[k]).strip() for k in sorted(raw)]
    if isinstance(raw, list):
        return [str(v).strip() for v in raw]
    raise ModelError(f"the export's 'names' metadata is neither a dict nor a list: {_REEXPORT}")
