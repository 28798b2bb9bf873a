# wbclf developer entry points. `make test` and `make demo` install what they need first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TORCH  ?= torch==2.14.1 torchvision==0.29.1
export NO_ALBUMENTATIONS_UPDATE := 1

.PHONY: install test test-stress test-fast lint demo bench clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	# torch first, pinned to the wheels this machine has on disk (pyproject only says >=2.2)
	$(BIN)/python -c "import torch, torchvision" 2>/dev/null || $(BIN)/pip install -q $(TORCH)
	$(BIN)/pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)  ## create .venv and install wbclf with the dev extra (idempotent)

test: install  ## the test suite (no network needed)
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q

# Two busy loops compete for the cores while the suite runs; they are stopped however it ends.
test-stress: install  ## the test suite on a busy machine (two CPU-bound processes alongside)
	@$(BIN)/python -c "while True: pass" & hog1=$$!; \
	$(BIN)/python -c "while True: pass" & hog2=$$!; \
	trap 'kill $$hog1 $$hog2 2>/dev/null' INT TERM; \
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q $(PYTEST_ARGS); rc=$$?; \
	kill $$hog1 $$hog2; exit $$rc

test-fast: install  ## everything but the slow end-to-end tests
	WANDB_MODE=offline HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -q -m "not slow"

lint: install
	$(BIN)/flake8 wbclf tests scripts

demo: install  ## a short local study on toy data, ending with its report
	$(BIN)/python scripts/demo.py

bench: install  ## the benchmark suite, quick mode
	$(BIN)/python scripts/benchmark.py --quick

clean:
	rm -rf $(VENV) runs build *.egg-info .pytest_cache
