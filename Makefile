# wbclf developer entry points. `make test` and `make demo` install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.14.1 torchvision==0.29.1
export NO_ALBUMENTATIONS_UPDATE := 1
# Test processes (pytest-xdist): one per core, at most 4. Most tests wait on subprocesses
# (a run, a sweep), so two on 2 cores halve the suite's time; each test process and the runs
# it starts import torch, so more than 4 cost memory for little gain.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 2); [ $$n -gt 4 ] && n=4; echo $$n)
PYTEST := WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -n $(TEST_WORKERS) \
	--dist worksteal

.PHONY: install test test-stress test-fast lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the wheels this machine has on disk (pyproject only says >=2.2)
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install wbclf with the dev extra (idempotent)

test: install  ## the test suite (no network needed), TEST_WORKERS processes
	$(PYTEST)

# Two busy loops compete for the cores while the suite runs; they are stopped however it ends.
test-stress: install  ## the test suite on a busy machine (two CPU-bound processes alongside)
	@$(BIN)/python -c "while True: pass" & hog1=$$!; \
	$(BIN)/python -c "while True: pass" & hog2=$$!; \
	trap 'kill $$hog1 $$hog2 2>/dev/null' INT TERM; \
	$(PYTEST) $(PYTEST_ARGS); rc=$$?; \
	kill $$hog1 $$hog2; exit $$rc

test-fast: install  ## everything but the slow end-to-end tests
	$(PYTEST) -m "not slow"

lint: install
	$(BIN)/flake8 wbclf tests scripts

demo: install  ## a short local study on toy data, ending with its report
	$(BIN)/python scripts/demo.py

bench: install  ## the benchmark suite, quick mode
	$(BIN)/python scripts/benchmark.py --quick

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
