# Two set-up commands on a fresh machine: `make demo` and `make test` (README "Quick start").
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip

.PHONY: test demo lint env clean

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first, pinned: on our CPU machines this takes the local CPU build (a bare `torch`
	# would pull several GB of CUDA packages); elsewhere it is the platform's normal wheel.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[cli,test]"
	# Meta's reference, for the parity tests only: no CUDA build step, no torchvision.
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation --no-deps sam2==1.1.0
	touch $@

env: $(VENV)/.installed

test: $(VENV)/.installed
	$(PY) -m pytest -q

demo: $(VENV)/.installed
	$(PY) -m sam2s demo --output-dir demo_output --overwrite

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check SAM2SSlicer Testing
	$(VENV)/bin/ruff check SAM2SSlicer Testing

clean:
	rm -rf $(VENV) demo_output
