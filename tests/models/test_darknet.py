"""The Darknet → ONNX converter, checked layer kind by layer kind against OpenCV's Darknet importer."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import numpy.typing as npt
import onnx
import onnxruntime as ort
import pytest

from tests.conftest import DarknetFiles
from visionq.detect.manifest import DarknetHead
from visionq.errors import ModelError
from visionq.models.darknet import INPUT_NAME, convert

FloatArray = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Conv:
    """What a [convolutional] section stores in the .weights file."""

    filters: int
    in_channels: int
    size: int
    batch_normalize: bool
    groups: int = 1


def weights_file(convs: Sequence[Conv], *, seed: int = 0) -> bytes:
    """Random weights in Darknet's format: header, then per conv biases, [scales, mean, variance], kernel."""
    rng = np.random.default_rng(seed)
    # major 0, minor 2, revision 0, then `seen` as 64 bits (Darknet >= 0.2).
    parts = [np.array([0, 2, 0], "<i4").tobytes(), np.array([0], "<i8").tobytes()]
    for conv in convs:
        f = conv.filters
        arrays = [rng.normal(0.0, 0.1, f)]
        if conv.batch_normalize:
            # Variances must be positive; all three are kept near 1 so activations stay O(1) through the net.
            arrays += [rng.uniform(0.5, 1.5, f), rng.normal(0.0, 0.1, f), rng.uniform(0.5, 1.5, f)]
        fan_in = conv.in_channels // conv.groups * conv.size * conv.size
        arrays.append(rng.normal(0.0, 1.0 / np.sqrt(fan_in), f * fan_in))
        parts += [a.astype("<f4").tobytes() for a in arrays]
    return b"".join(parts)


def cfg(text: str) -> str:
    return textwrap.dedent(text).lstrip()


def random_input(width: int, height: int, channels: int = 3) -> FloatArray:
    return np.random.default_rng(1).random((1, channels, height, width), dtype=np.float32)


def run_converted(model: onnx.ModelProto, x: FloatArray) -> list[FloatArray]:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
    outputs: list[FloatArray] = session.run(None, {INPUT_NAME: x})
    return outputs


def opencv_heads(cfg_path: Path, weights_path: Path, x: FloatArray) -> list[FloatArray]:
    """OpenCV's raw output of the layer feeding each [yolo] layer, in cfg order."""
    net = cv2.dnn.readNetFromDarknet(str(cfg_path), str(weights_path))
    names = list(net.getLayerNames())
    # OpenCV puts a `permute_<i>` before each `yolo_<i>`; the layer before the permute (the head conv, or
    # its activation when it has one) holds the tensor the converter hands out.
    heads = [names[names.index(n) - 1] for n in names if n.startswith("permute_")]
    net.setInput(x)
    outputs = net.forward(heads)
    return [np.asarray(o) for o in outputs]


def assert_matches_opencv(tmp_path: Path, cfg_text: str, weights: bytes) -> list[FloatArray]:
    (tmp_path / "net.cfg").write_text(cfg_text)
    (tmp_path / "net.weights").write_bytes(weights)
    conversion = convert(cfg_text, weights)
    x = random_input(conversion.width, conversion.height)

    ours = run_converted(conversion.model, x)
    reference = opencv_heads(tmp_path / "net.cfg", tmp_path / "net.weights", x)

    assert [o.shape for o in ours] == [r.shape for r in reference]
    for out, ref in zip(ours, reference, strict=True):
        scale = float(np.abs(ref).max())
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * max(scale, 1e-3))
    return ours


@pytest.fixture(autouse=True)
def one_opencv_thread() -> Iterator[None]:
    """The test machine's cores are shared with benchmarks; these nets are tiny anyway."""
    before = cv2.getNumThreads()
    cv2.setNumThreads(1)
    yield
    cv2.setNumThreads(before)


# Every layer kind yolov3-tiny and yolov4-tiny use, on a non-square input so that a swapped height and
# width shows. Shapes are (height x width x channels) after each layer.
TINY_CFG = cfg(
    """
    [net]
    width=32
    height=24
    channels=3

    # 0: 24x32x8
    [convolutional]
    batch_normalize=1
    filters=8
    size=3
    stride=1
    pad=1
    activation=leaky

    # 1: 12x16x8
    [maxpool]
    size=2
    stride=2

    # 2: 12x16x8
    [convolutional]
    filters=8
    size=3
    stride=1
    pad=1
    activation=mish

    # 3: 12x16x4, the second half of 2's channels
    [route]
    layers=-1
    groups=2
    group_id=1

    # 4: 12x16x4
    [convolutional]
    batch_normalize=1
    filters=4
    size=3
    stride=1
    pad=1
    activation=linear

    # 5: 12x16x8
    [route]
    layers=-1,-2

    # 6: 12x16x8
    [convolutional]
    batch_normalize=1
    filters=8
    size=1
    stride=1
    pad=1
    activation=logistic

    # 7: 12x16x8, 6 + 2
    [shortcut]
    from=-5
    activation=linear

    # 8: 6x8x8
    [maxpool]
    size=2
    stride=2

    # 9: 6x8x8, yolov3-tiny's last maxpool
    [maxpool]
    size=2
    stride=1

    # 10: 6x8x21
    [convolutional]
    filters=21
    size=1
    stride=1
    pad=1
    activation=linear

    # 11
    [yolo]
    mask=3,4,5
    anchors=4,5, 8,9, 12,14, 16,20, 24,26, 30,31
    classes=2
    num=6
    scale_x_y=1.05

    # 12: 6x8x8, layer 9
    [route]
    layers=-3

    # 13: 6x8x4
    [convolutional]
    batch_normalize=1
    filters=4
    size=1
    stride=1
    pad=1
    activation=leaky

    # 14: 12x16x4
    [upsample]
    stride=2

    # 15: 12x16x12, 14 + 7
    [route]
    layers=-1,7

    # 16: 12x16x21
    [convolutional]
    filters=21
    size=1
    stride=1
    pad=1
    activation=linear

    # 17
    [yolo]
    mask=0,1,2
    anchors=4,5, 8,9, 12,14, 16,20, 24,26, 30,31
    classes=2
    num=6
    """
)
TINY_CONVS = [
    Conv(8, 3, 3, True),
    Conv(8, 8, 3, False),
    Conv(4, 4, 3, True),
    Conv(8, 8, 1, True),
    Conv(21, 8, 1, False),
    Conv(4, 8, 1, True),
    Conv(21, 12, 1, False),
]


def test_every_tiny_yolo_layer_kind_matches_opencv(tmp_path: Path) -> None:
    outputs = assert_matches_opencv(tmp_path, TINY_CFG, weights_file(TINY_CONVS))

    assert [o.shape for o in outputs] == [(1, 21, 6, 8), (1, 21, 12, 16)]


def test_heads_record_their_masked_anchors_scale_and_stride() -> None:
    conversion = convert(TINY_CFG, weights_file(TINY_CONVS))

    assert (conversion.width, conversion.height) == (32, 24)
    assert conversion.heads == [
        DarknetHead(
            "head_0", ((16.0, 20.0), (24.0, 26.0), (30.0, 31.0)), classes=2, stride=4, scale_x_y=1.05
        ),
        DarknetHead("head_1", ((4.0, 5.0), (8.0, 9.0), (12.0, 14.0)), classes=2, stride=2),
    ]
    assert [o.name for o in conversion.model.graph.output] == ["head_0", "head_1"]


ONE_CONV_NET = cfg(
    """
    [net]
    width={width}
    height={height}
    channels=3

    [convolutional]
    filters=8
    {conv_options}

    [convolutional]
    filters=14
    size=1
    stride=1
    pad=1
    activation={head_activation}

    [yolo]
    mask=0,1
    anchors=3,4, 6,8
    classes=2
    num=2
    """
)


def one_conv_net(
    conv_options: str, *, width: int = 16, height: int = 12, head_activation: str = "linear"
) -> str:
    """[net] → one conv of 8 filters with `conv_options` → a 1x1 head conv of 14 filters → [yolo]."""
    return ONE_CONV_NET.format(
        width=width, height=height, conv_options=conv_options, head_activation=head_activation
    )


@pytest.mark.parametrize("activation", ["leaky", "linear", "logistic", "mish", "relu", "swish"])
@pytest.mark.parametrize("batch_normalize", [True, False])
def test_each_activation_with_and_without_batch_norm_matches_opencv(
    tmp_path: Path, activation: str, batch_normalize: bool
) -> None:
    text = one_conv_net(
        f"batch_normalize={int(batch_normalize)}\nsize=3\nstride=1\npad=1\nactivation={activation}"
    )
    weights = weights_file([Conv(8, 3, 3, batch_normalize), Conv(14, 8, 1, False)])

    assert_matches_opencv(tmp_path, text, weights)


def test_a_head_conv_with_its_own_logistic_activation_matches_opencv(tmp_path: Path) -> None:
    # Scaled-YOLOv4 heads (new_coords=1) end in a logistic conv; the head is the activation's output.
    text = one_conv_net("size=3\nstride=2\npad=1\nactivation=leaky", head_activation="logistic")
    weights = weights_file([Conv(8, 3, 3, False), Conv(14, 8, 1, False)])

    outputs = assert_matches_opencv(tmp_path, text, weights)

    assert outputs[0].shape == (1, 14, 6, 8)
    assert 0.0 < outputs[0].min() and outputs[0].max() < 1.0


def test_strided_and_grouped_convolutions_match_opencv(tmp_path: Path) -> None:
    text = cfg(
        """
        [net]
        width=20
        height=14
        channels=3

        [convolutional]
        batch_normalize=1
        filters=8
        size=3
        stride=2
        pad=1
        activation=leaky

        [convolutional]
        batch_normalize=1
        filters=8
        size=3
        stride=1
        pad=1
        groups=2
        activation=leaky

        [convolutional]
        filters=14
        size=1
        stride=1
        pad=1
        activation=linear

        [yolo]
        mask=0,1
        anchors=3,4, 6,8
        classes=2
        num=2
        """
    )
    weights = weights_file([Conv(8, 3, 3, True), Conv(8, 8, 3, True, groups=2), Conv(14, 8, 1, False)])

    outputs = assert_matches_opencv(tmp_path, text, weights)

    assert outputs[0].shape == (1, 14, 7, 10)


@pytest.mark.parametrize(("size", "stride"), [(2, 2), (3, 2), (2, 1), (3, 1)])
def test_maxpool_on_odd_sizes_pads_like_darknet_as_opencv_does(
    tmp_path: Path, size: int, stride: int
) -> None:
    # 15x11 after the first conv: odd on both axes, so the padding Darknet adds at the end matters.
    text = cfg(
        f"""
        [net]
        width=15
        height=11
        channels=3

        [convolutional]
        filters=8
        size=3
        stride=1
        pad=1
        activation=leaky

        [maxpool]
        size={size}
        stride={stride}

        [convolutional]
        filters=14
        size=1
        stride=1
        pad=1
        activation=linear

        [yolo]
        mask=0,1
        anchors=3,4, 6,8
        classes=2
        num=2
        """
    )
    weights = weights_file([Conv(8, 3, 3, False), Conv(14, 8, 1, False)])

    outputs = assert_matches_opencv(tmp_path, text, weights)

    # Darknet: out = (in + size - 1 - size) // stride + 1.
    assert outputs[0].shape == (1, 14, (11 - 1) // stride + 1, (15 - 1) // stride + 1)


def test_yolov4_tiny_converts_to_two_heads_with_its_anchors(darknet_files: DarknetFiles) -> None:
    conversion = convert(darknet_files.cfg.read_text(), darknet_files.weights.read_bytes())

    assert (conversion.width, conversion.height) == (416, 416)
    assert [h.anchors for h in conversion.heads] == [
        ((81, 82), (135, 169), (344, 319)),
        ((23, 27), (37, 58), (81, 82)),
    ]
    assert [h.scale_x_y for h in conversion.heads] == [1.05, 1.05]
    assert [h.stride for h in conversion.heads] == [32, 16]
    assert [h.classes for h in conversion.heads] == [80, 80]
    assert [h.new_coords for h in conversion.heads] == [False, False]
    shapes = [[d.dim_value for d in o.type.tensor_type.shape.dim] for o in conversion.model.graph.output]
    assert shapes == [[1, 255, 13, 13], [1, 255, 26, 26]]


def test_yolov4_tiny_heads_match_opencv_on_the_real_weights(darknet_files: DarknetFiles) -> None:
    conversion = convert(darknet_files.cfg.read_text(), darknet_files.weights.read_bytes())
    x = random_input(416, 416)

    ours = run_converted(conversion.model, x)
    reference = opencv_heads(darknet_files.cfg, darknet_files.weights, x)

    assert [o.shape for o in ours] == [(1, 255, 13, 13), (1, 255, 26, 26)]
    for out, ref in zip(ours, reference, strict=True):
        np.testing.assert_allclose(out, ref, rtol=1e-4, atol=1e-4 * float(np.abs(ref).max()))


# --- refusing what it cannot convert -------------------------------------------------------------

SIMPLE_CFG = one_conv_net("size=3\nstride=1\npad=1\nactivation=leaky")
SIMPLE_WEIGHTS = weights_file([Conv(8, 3, 3, False), Conv(14, 8, 1, False)])


def test_the_simple_net_used_below_converts() -> None:
    assert len(convert(SIMPLE_CFG, SIMPLE_WEIGHTS).heads) == 1


def test_an_unsupported_layer_kind_is_named() -> None:
    text = SIMPLE_CFG.replace("[yolo]", "[reorg]\nstride=2\n\n[yolo]")

    with pytest.raises(ModelError, match=r"layer \[reorg\] is not supported"):
        convert(text, SIMPLE_WEIGHTS)


def test_an_unsupported_activation_is_named() -> None:
    with pytest.raises(ModelError, match="activation 'gelu' is not supported"):
        convert(SIMPLE_CFG.replace("activation=leaky", "activation=gelu"), SIMPLE_WEIGHTS)


def test_a_cfg_without_a_yolo_layer_is_not_a_detector() -> None:
    text = SIMPLE_CFG.split("[yolo]")[0]

    with pytest.raises(ModelError, match=r"no \[yolo\] layer"):
        convert(text, SIMPLE_WEIGHTS)


def test_a_yolo_layer_whose_channels_do_not_fit_its_classes_is_refused() -> None:
    with pytest.raises(ModelError, match=r"input has 14 channels, 2 anchors x \(5 \+ 3 classes\)"):
        convert(SIMPLE_CFG.replace("classes=2", "classes=3"), SIMPLE_WEIGHTS)


def test_a_weights_file_shorter_than_its_header_is_refused() -> None:
    with pytest.raises(ModelError, match="too short to hold a Darknet header"):
        convert(SIMPLE_CFG, SIMPLE_WEIGHTS[:16])


def test_a_weights_file_shorter_than_the_cfg_needs_is_refused() -> None:
    with pytest.raises(ModelError, match="weights file is shorter than the cfg needs"):
        convert(SIMPLE_CFG, SIMPLE_WEIGHTS[:-4])


def test_a_weights_file_longer_than_the_cfg_needs_says_by_how_much() -> None:
    extra = np.zeros(3, "<f4").tobytes()

    with pytest.raises(ModelError, match="weights file has 3 floats more than the cfg uses"):
        convert(SIMPLE_CFG, SIMPLE_WEIGHTS + extra)


def test_weights_for_a_different_cfg_are_refused() -> None:
    with pytest.raises(ModelError, match="weights file has 1248 floats more than the cfg uses"):
        convert(SIMPLE_CFG, weights_file(TINY_CONVS))


def test_a_weights_file_cut_in_the_middle_of_a_float_is_refused_as_a_model_error() -> None:
    with pytest.raises(ModelError, match="weights file"):
        convert(SIMPLE_CFG, SIMPLE_WEIGHTS[:-2])


def test_old_weights_files_with_a_32_bit_seen_counter_are_read() -> None:
    # Darknet before 0.2 wrote `seen` as 32 bits: the floats then start 4 bytes earlier.
    old = np.array([0, 1, 0], "<i4").tobytes() + np.array([0], "<i4").tobytes() + SIMPLE_WEIGHTS[20:]

    new_model = convert(SIMPLE_CFG, SIMPLE_WEIGHTS).model
    old_model = convert(SIMPLE_CFG, old).model

    assert [i.raw_data for i in old_model.graph.initializer] == [
        i.raw_data for i in new_model.graph.initializer
    ]


def test_a_negative_batch_norm_variance_is_refused_instead_of_making_nan_weights() -> None:
    text = one_conv_net("batch_normalize=1\nsize=3\nstride=1\npad=1\nactivation=leaky")
    good = weights_file([Conv(8, 3, 3, True), Conv(14, 8, 1, False)])
    floats = np.frombuffer(good, "<f4", offset=20).copy()
    floats[3 * 8] = -1.0  # the first variance: after 8 biases, 8 scales and 8 means
    bad = good[:20] + floats.astype("<f4").tobytes()
    convert(text, good)
    with pytest.raises(ModelError, match="negative batch-norm variance"):
        convert(text, bad)
