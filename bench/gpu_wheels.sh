#!/usr/bin/env bash
# Download, here (where the package registries answer), the wheels that the device tool's GPU image
# lacks, for its Python (3.12, x86_64), at the versions `make test` installed in .venv.  The GPU
# image already has torch, transformers, tokenizers, huggingface_hub, safetensors, accelerate,
# numpy, Pillow, PyYAML, requests and pyparsing; the device has no network.
#
#   bench/gpu_wheels.sh                 # -> .gpu-wheels/ (git-ignored, ~10 MB), carried by the device tool
#   PYVER=3.11 bench/gpu_wheels.sh      # for another Python (the CPU smoke test of bench/run_gpu.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${PYVER:-3.12}
DEST=${DEST:-.gpu-wheels}
NAMES='diffusers|compel|pydantic|pydantic[-_]core|annotated[-_]types|typing[-_]inspection|typing[-_]extensions'
NAMES+='|watchdog|structlog|tenacity|importlib[-_]metadata'
pins=$(.venv/bin/pip freeze | grep -iE "^($NAMES)==" )
[ -n "$pins" ] || { echo "gpu_wheels: no pins found: run 'make test' (or make venv) first" >&2; exit 1; }
rm -rf "$DEST"
# shellcheck disable=SC2086  # one argument per pin
.venv/bin/pip download --quiet --dest "$DEST" --no-deps --only-binary=:all: \
  --python-version "$PYVER" --implementation cp --abi "cp${PYVER/./}" --abi abi3 --abi none \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  --platform any $pins
ls -1 "$DEST"
du -sh "$DEST"
