# The table of contents of a medmerge run. Every target sets itself up.
PYTHON ?= python3.11
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# torch is pinned here (not in pyproject) to the CPU build that lies on the dev/CI machines;
# real users get any torch>=2.4 through pyproject's range.
TORCH  ?= torch==2.13.0
DEMO   ?= runs/demo

.PHONY: install demo test test-all lint clean

install: $(STAMP)

$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev]"
	touch $(STAMP)

demo: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/medmerge demo --out $(DEMO)

test: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest  # the default tier: addopts deselects slow

test-all: $(STAMP)
	HF_HUB_OFFLINE=1 $(BIN)/python -m pytest -m ""

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

clean:
	rm -rf $(VENV) runs build
