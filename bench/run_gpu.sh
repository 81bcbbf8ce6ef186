#!/usr/bin/env bash
# The GPU set of issue 6 on a machine lent by the device tool, one step per call (each fits the
# tool's 10 minutes).  Nothing is downloaded: the model is the full-size SDXL architecture with
# random weights, built on the GPU; the wheels the GPU image lacks come from bench/gpu_wheels.sh.
#
#   bench/gpu_wheels.sh                                   # here, once
#   run(command="bench/run_gpu.sh backend", carry=[".gpu-wheels"])       # ~3 min (estimate)
#       sdxl_gpu.py through SdxlBackend.generate: base (bf16 + SDPA), base + refiner, the x2 upscale pass
#   run(command="bench/run_gpu.sh daemon",  carry=[".gpu-wheels"])       # ~6 min (estimate)
#       the random base saved as a diffusers folder, then bench/overhead.py --model: 20 images
#       through `astrowatch drain` vs bare diffusers loops (target: overhead under 3 %)
#   run(command="bench/run_gpu.sh compile", carry=[".gpu-wheels"])       # compiling may take minutes
#       sdxl_gpu.py --cases compile (torch.compile max-autotune; the first image includes compiling)
#
#   PY=.venv/bin/python bench/run_gpu.sh backend --tiny   # any step on CPU with the tiny model
#
# Results: $OUT (the device tool brings it back), else bench/out/gpu/.
set -euo pipefail
cd "$(dirname "$0")/.."
step=${1:-}
tiny=${2:-}
case "$step" in backend|daemon|compile) ;; *) echo "usage: bench/run_gpu.sh backend|daemon|compile [--tiny]" >&2; exit 2 ;; esac
PY=${PY:-python3}
OUT=${OUT:-bench/out/gpu}
MODEL=${MODEL:-/tmp/astrowatch-sdxl-random}
mkdir -p "$OUT"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 PYTHONUNBUFFERED=1

if [ -d .gpu-wheels ]; then  # the carried wheels, shadowing nothing else of the image
  rm -rf .gpu-site
  "$PY" -m pip install --quiet --no-index --no-deps --target .gpu-site .gpu-wheels/*.whl
  export PYTHONPATH="$PWD/.gpu-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # astrowatch itself, from the checkout

{
  date -u +%FT%TZ
  "$PY" -c 'import sys, torch, diffusers, transformers, compel, pydantic, watchdog, structlog, astrowatch.backends.sdxl.backend
print("python", sys.version.split()[0], "| torch", torch.__version__, "cuda", torch.version.cuda,
      "|", torch.cuda.get_device_name() if torch.cuda.is_available() else "no GPU",
      "| diffusers", diffusers.__version__, "| transformers", transformers.__version__,
      "| compel", __import__("importlib.metadata").metadata.version("compel"))'
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader 2>/dev/null || true
} | tee "$OUT/environment-$step.txt"

if [ "$tiny" = "--tiny" ]; then
  gpu=(--tiny); daemon=(--device cpu --dtype float32 --size 64 --steps 4 --images 6); target=1.10
else
  gpu=(); daemon=(--device cuda --dtype bfloat16 --size 1024 --steps 30 --images 20); target=1.03
fi

case "$step" in
  backend)
    "$PY" bench/sdxl_gpu.py "${gpu[@]}" --cases base,refiner,upscale --out "$OUT/sdxl_gpu.md" 2>&1 | tee "$OUT/sdxl_gpu.log" ;;
  daemon)
    rm -rf "$MODEL"
    "$PY" bench/sdxl_gpu.py "${gpu[@]}" --cases none --save "$MODEL" 2>&1 | tee "$OUT/save.log"
    "$PY" bench/overhead.py --model "$MODEL" "${daemon[@]}" --threads 1 --init-image none --target "$target" \
      2>&1 | tee "$OUT/overhead.log"
    cp "${ASTROWATCH_BENCH_OUT:-bench/out}/overhead.json" "$OUT/overhead.json" ;;
  compile)
    "$PY" bench/sdxl_gpu.py "${gpu[@]}" --cases compile --out "$OUT/sdxl_gpu_compile.md" 2>&1 | tee "$OUT/sdxl_gpu_compile.log" ;;
esac
ls -l "$OUT"
