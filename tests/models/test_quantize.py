"""Int8 quantization: how far int8 detections agree with fp32 (the CPU check is in tests/test_system.py)."""

from __future__ import annotations

import shutil

import pytest

from tests.helpers import load_detector
from visionq.bench.detector import agreement
from visionq.detect.detector import Detector
from visionq.models import quantize
from visionq.models.cache import ModelCache

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def int8_7bit(
    tmp_path_factory: pytest.TempPathFactory, model_cache: ModelCache, samples: dict[str, bytes]
) -> Detector:
    cache = ModelCache(tmp_path_factory.mktemp("quantize") / "models")
    shutil.copytree(model_cache.root / "yolov4-tiny", cache.root / "yolov4-tiny")
    manifest = quantize.quantize(cache, "yolov4-tiny", list(samples.values()), reduce_range=True)
    assert manifest.name == "yolov4-tiny-int8"
    assert "7-bit weights" in manifest.source
    return load_detector(cache, manifest.name)


def test_int8_with_7_bit_weights_finds_what_fp32_finds_on_the_sample_photos(
    int8_7bit: Detector, detector: Detector, samples: dict[str, bytes]
) -> None:
    # 7-bit weights run correctly on every CPU, VNNI or not. On the 2-core AMD EPYC (AVX2, no VNNI)
    # of development this found 7 of 7, mean IoU 0.916, largest confidence gap 0.136.
    found = agreement(detector, int8_7bit, list(samples.values()))

    assert found.reference == 7
    assert found.matched == found.reference, found
    assert found.mean_iou >= 0.85, found
    assert found.max_confidence_gap <= 0.25, found
    assert found.extra == 0, found
