# Two commands on a fresh machine:  `make run`  and  `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
# torch first and pinned: a bare `torch` requirement pulls a multi-GB CUDA build.  On a GPU box
# use your CUDA build, e.g.  make TORCH="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128"
TORCH  ?= torch==2.13.0
STAMP  := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PYTEST_ARGS ?= -n 2

.PHONY: run test bench bench-gpu install clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet $(TORCH)
	$(BIN)/python -m pip install --quiet -e '.[all]'
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(BIN)/astrowatch init .
	$(BIN)/astrowatch run --config config.yaml

# Best effort (root + apt-get only): headless Chromium for the review page's screenshot test and
# redis-server for the executor: celery tests, which are skipped without them.
test: $(STAMP)
	-@command -v chromium >/dev/null || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null) || true
	-@command -v redis-server >/dev/null || [ -x /usr/bin/redis-server ] || (command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ] && apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends redis-server >/dev/null) || true
	$(BIN)/python -m pytest $(PYTEST_ARGS) -p no:cacheprovider

bench: $(STAMP)
	$(BIN)/python bench/run_cpu.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache
