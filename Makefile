# attnbench — one command to run, one to test.  `make help` lists the targets.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip
# This machine's local package cache holds torch 2.14.1 + torchvision 0.29.1 as a matching pair
# (the CPU-only torch 2.13.0 file breaks torchvision). Override on other machines if needed.
TORCH_PINS ?= torch==2.14.1 torchvision==0.29.1
STAMP  := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: help install run test test-fast lint bench bench-check clean

help:
	@echo "make run        install (if needed) and train the default model (FocalNet on embedded digits)"
	@echo "make test       install (if needed) and run the full test suite (what CI runs)"
	@echo "make test-fast  the suite without tests marked slow"
	@echo "make lint       ruff"
	@echo "make bench      mechanism cost curves (python -m attnbench.bench)"
	@echo "make bench-check  fail if our FocalNet training throughput drops below 0.9x timm's"

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH_PINS)
	$(PIP) install -q -e '.[dev]' $(TORCH_PINS)
	touch $(STAMP)

install: $(STAMP)

run: $(STAMP)
	$(PY) -m attnbench $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -n 2 -m "not slow" $(PYTEST_ARGS)

lint: $(STAMP)
	$(PY) -m ruff check attnbench tests benchmarks

bench: $(STAMP)
	$(PY) -m attnbench.bench $(ARGS)

bench-check: $(STAMP)
	$(PY) benchmarks/throughput_vs_timm.py --check 0.9

clean:
	rm -rf $(VENV) build dist *.egg-info
