"""The inference runtimes a detector runs its ONNX graph on: ONNX Runtime, and OpenVINO where installed.

An engine takes the network's input tensor (float32 NCHW in [0, 1]) and returns the graph's outputs,
in the order of `outputs`. Which runtime and precision a detector gets is settled by `resolve`:

- runtime `auto` is OpenVINO when it is installed, else ONNX Runtime. OpenVINO ran visionq's
  yolov4-tiny faster on every CPU measured (README, Performance), fp32 and int8 alike;
- precision `auto` is int8 for a quantized model and fp32 for any other. bf16 runs only when asked for
  (`VISIONQ_PRECISION=bf16`; OpenVINO on a CPU with AVX-512 BF16 or AMX): it agreed with fp32 on the
  sample photos, but on bus.jpg re-encoded at quality 95 its bus box jumped to another anchor (IoU 0.66
  with fp32's, on an AMD EPYC with AVX-512 BF16 and on an Intel Xeon with AMX alike), further than the
  int8 work accepts. `visionq bench detector` prints its agreement.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Final, Literal, get_args

import numpy as np
import numpy.typing as npt

from visionq.errors import ModelError

RuntimeName = Literal["onnxruntime", "openvino"]
Precision = Literal["fp32", "bf16", "int8"]
RUNTIMES: Final[tuple[RuntimeName, ...]] = get_args(RuntimeName)
AUTO: Final = "auto"

Outputs = list[npt.NDArray[np.float32]]


class Engine(ABC):
    """One compiled model on one runtime; `run` may be called from several threads at once."""

    runtime: RuntimeName
    precision: Precision
    outputs: list[str]  # graph output names, in the order `run` returns them

    @abstractmethod
    def run(self, tensor: npt.NDArray[np.float32]) -> Outputs:
        """The graph's outputs for a ready input tensor."""


def installed(runtime: RuntimeName) -> bool:
    """Whether `runtime`'s Python package can be imported here."""
    return importlib.util.find_spec(runtime) is not None


def available() -> list[RuntimeName]:
    """The runtimes installed here, ONNX Runtime first."""
    return [r for r in RUNTIMES if installed(r)]


# oneDNN's cap on the instructions it uses (ONEDNN_MAX_CPU_ISA), which OpenVINO's CPU plugin honours:
# with AVX2 it runs the kernels an AVX2-only CPU gets (its execution graph names them, `jit_avx2_I8`...).
# Its capability list still says BF16 under a cap; these are the caps that leave bf16 native.
ISA_CAP_VARIABLE: Final = "ONEDNN_MAX_CPU_ISA"
_BF16_ISA_CAPS: Final = frozenset(
    {"ALL", "DEFAULT", "AVX512_CORE_BF16", "AVX512_CORE_FP16", "AVX512_CORE_AMX", "AVX512_CORE_AMX_FP16"}
    | {"AVX10_1_512", "AVX10_1_512_AMX", "AVX10_1_512_AMX_FP16", "AVX10_2_512", "AVX10_2_512_AMX_2"}
)


def isa_cap() -> str | None:
    """The instruction-set cap OpenVINO runs under (ONEDNN_MAX_CPU_ISA), or None."""
    return os.environ.get(ISA_CAP_VARIABLE, "").strip().upper() or None


def bf16_supported() -> bool:
    """Whether OpenVINO is installed and runs bf16 natively on this CPU (AVX-512 BF16 or AMX), and no
    instruction-set cap (`isa_cap`) rules that out."""
    if not installed("openvino"):
        return False
    cap = isa_cap()
    if cap is not None and cap not in _BF16_ISA_CAPS:
        return False
    return "BF16" in _openvino_core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


def resolve(runtime: str, precision: str, *, int8: bool) -> tuple[RuntimeName, Precision]:
    """The runtime and precision a model runs with, from settings that may say `auto`.

    `precision` is for fp32 models; an int8 (quantized) model runs as int8 whatever it says. bf16 needs
    OpenVINO and a CPU that has it; a runtime must be installed. Else a ModelError says what to change.
    """
    if runtime == AUTO:
        chosen: RuntimeName = "openvino" if installed("openvino") else "onnxruntime"
    elif runtime in RUNTIMES:
        chosen = runtime
        if not installed(chosen):
            raise ModelError(f"VISIONQ_RUNTIME={runtime}, but {runtime} is not installed here")
    else:
        raise ModelError(f"VISIONQ_RUNTIME must be auto, {' or '.join(RUNTIMES)}; got {runtime!r}")
    if int8:
        return chosen, "int8"  # a quantized model's layers are int8 whatever the setting
    if precision in (AUTO, "fp32"):
        return chosen, "fp32"
    if precision != "bf16":
        raise ModelError(f"VISIONQ_PRECISION must be auto, fp32 or bf16; got {precision!r}")
    if chosen != "openvino":
        raise ModelError("bf16 runs on OpenVINO only: set VISIONQ_RUNTIME=openvino (or auto)")
    if not bf16_supported():
        raise ModelError("this CPU has no bf16 instructions (AVX-512 BF16 or AMX): use fp32")
    return chosen, "bf16"


def open_engine(path: Path, *, runtime: RuntimeName, precision: Precision, threads: int) -> Engine:
    """`path`'s graph compiled on `runtime` (already resolved) with `threads` threads."""
    if runtime == "openvino":
        return OpenVinoEngine(path, precision=precision, threads=threads)
    return OnnxRuntimeEngine(path, precision=precision, threads=threads)


class OnnxRuntimeEngine(Engine):
    """An ONNX Runtime session on the CPU execution provider."""

    runtime: RuntimeName = "onnxruntime"

    def __init__(self, path: Path, *, precision: Precision, threads: int) -> None:
        import onnxruntime as ort

        if precision == "bf16":
            raise ModelError("ONNX Runtime's CPU provider has no bf16: use OpenVINO for it")
        self.precision = precision
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3  # warnings about unused initialisers are noise to users
        try:
            self._session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own untyped errors
            raise ModelError(f"ONNX Runtime cannot load {path}: {exc}") from exc
        self._input = self._session.get_inputs()[0].name
        self.outputs = [o.name for o in self._session.get_outputs()]

    def run(self, tensor: npt.NDArray[np.float32]) -> Outputs:
        outputs: Outputs = self._session.run(self.outputs, {self._input: tensor})
        return outputs


class OpenVinoEngine(Engine):
    """An OpenVINO model compiled for the CPU, in latency mode (one stream) with `threads` threads.

    Threads are not pinned to cores: OpenVINO pins by default, and two worker processes of one thread
    each were then both pinned to the first core (half the throughput, measured).
    """

    runtime: RuntimeName = "openvino"

    def __init__(self, path: Path, *, precision: Precision, threads: int) -> None:
        self.precision = precision
        config: dict[str, Any] = {
            "PERFORMANCE_HINT": "LATENCY",
            "NUM_STREAMS": 1,
            "INFERENCE_NUM_THREADS": threads,
            "ENABLE_CPU_PINNING": False,
            # int8 layers run int8 whatever the hint; the fp32 ones of an int8 model (its heads) stay fp32.
            "INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
        }
        core = _openvino_core()
        try:
            model = core.read_model(str(path))
            # The ONNX output names, as read: compiling may add names of its own (the producing node's).
            self.outputs = [o.get_any_name() for o in model.outputs]
            self._compiled = core.compile_model(model, "CPU", config)
        except Exception as exc:  # OpenVINO raises RuntimeError with its own text
            raise ModelError(f"OpenVINO cannot load {path}: {exc}") from exc
        self._requests = threading.local()  # an infer request serves one call at a time

    def run(self, tensor: npt.NDArray[np.float32]) -> Outputs:
        request = getattr(self._requests, "request", None)
        if request is None:
            request = self._requests.request = self._compiled.create_infer_request()
        # infer() returns copies of the outputs (its buffers are overwritten by the next inference).
        return list(request.infer({0: tensor}, share_inputs=True).to_tuple())

    def kernels(self) -> dict[str, int]:
        """How many convolutions run on each of OpenVINO's kernels (`brgconv_avx512_amx_bf16`...): which
        instructions this CPU, and any `isa_cap`, left it."""
        found: dict[str, int] = {}
        for op in self._compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if "layerType" in info and info["layerType"].astype(str) == "Convolution":
                kernel = info["primitiveType"].astype(str)
                found[kernel] = found.get(kernel, 0) + 1
        return found


_core: Any = None
_core_lock = threading.Lock()


def _openvino_core() -> Any:
    """The process's one OpenVINO Core (it holds the plugins; building one takes a while)."""
    global _core
    with _core_lock:
        if _core is None:
            import openvino

            _core = openvino.Core()
        return _core
