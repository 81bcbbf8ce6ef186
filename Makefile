# Two commands on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build.  On a GPU box
# use your CUDA build, e.g.  make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0
# The WD14 tagger's runtime: onnxruntime (CPU) by default; on a GPU box  make ORT_EXTRA=caption-gpu
# (onnxruntime-gpu: the same module, they conflict, so exactly one is installed).
ORT_EXTRA ?= caption
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)-$(ORT_EXTRA)
PYTEST_ARGS ?= -n 2

.PHONY: run lint test test-fast test-long bench bench-smoke install clean docs

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip uninstall --quiet -y onnxruntime onnxruntime-gpu >/dev/null 2>&1 || true
	$(BIN)/python -m pip install --quiet -e '.[all,$(ORT_EXTRA)]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/astrowatch init .
	$(BIN)/astrowatch run --config config.yaml

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy
	$(BIN)/lint-imports

# The in-process tests only (tests/unit), without those that run tiny torch models (marker
# `torch`: SDXL, IP-Adapter, BLIP, Florence-2; `make test` runs them): under a minute on 2 cores.
test-fast: $(STAMP)
	$(BIN)/python -m pytest tests/unit -n 2 -m "not torch" -p no:cacheprovider -q

# Best effort (root + apt-get only): headless Chromium for the review page's screenshot test,
# redis-server for the executor: celery tests and systemd (for systemd-analyze: the units' verify
# and exposure test), which are skipped without them.  The real CLIP
# vocabulary for the token-count check comes from the open-clip-torch wheel, downloaded as a file
# (--no-deps: never installed, no torchvision).
# Every skip is printed (-rs) and tests/support/check_skips.py fails on one not in
# tests/support/skip_allowlist.txt.  The `long` variants are left to `make test-long`.
CLIP_VOCAB_WHEEL ?= open-clip-torch==3.3.0
test: $(STAMP) lint docs
	-@command -v chromium >/dev/null || command -v chromium-browser >/dev/null || command -v google-chrome >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null) || true
	-@command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null) || true
	-@command -v systemd-analyze >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends systemd >/dev/null) || true
	ls build/wheels/open_clip_torch-*.whl >/dev/null 2>&1 || $(BIN)/python -m pip download --quiet --no-deps --dest build/wheels "$(CLIP_VOCAB_WHEEL)"
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m "not long" -p no:cacheprovider -rs --junitxml=build/junit.xml
	$(BIN)/python tests/support/check_skips.py build/junit.xml
	$(MAKE) bench-smoke

# Exit status 5 is pytest's "no test collected": no long variant is not a failure.
test-long: $(STAMP)
	$(BIN)/python -m pytest $(PYTEST_ARGS) -m long -p no:cacheprovider -rs || [ $$? -eq 5 ]

bench: $(STAMP)
	$(BIN)/python bench/run_cpu.py

# Every benchmark script at a seconds-long size (results under build/bench-smoke, not bench/out),
# then the GPU script's backend step on the tiny random model on CPU (nothing downloaded).
bench-smoke: $(STAMP)
	$(BIN)/python bench/smoke.py --out build/bench-smoke
	OUT=build/bench-smoke/gpu PY=$(BIN)/python bench/run_gpu.sh backend --tiny

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache

docs: $(STAMP)
	$(BIN)/mkdocs build --strict --site-dir build/site
