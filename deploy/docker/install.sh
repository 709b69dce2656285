#!/bin/sh
# Install visionq, non-editable, into a fresh virtualenv: the Dockerfile's build stage runs this, and
# tests/test_compose.py runs it unchanged in a temporary folder.
#   usage: install.sh VENV SOURCE      (PYTHON picks the interpreter; default python3)
set -eu
venv=$1
source=$2
"${PYTHON:-python3}" -m venv "$venv"
"$venv/bin/python" -m pip install --no-input "$source"
