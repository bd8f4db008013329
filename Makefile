# Two set-up commands on a fresh machine: `make demo` and `make test` (README "Quick start").
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
DEMO_DATA ?= ../shared/data/endoscapes_v4

.PHONY: test test-fast demo lint env clean

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first, pinned: on our CPU machines this takes the local CPU build (a bare `torch`
	# would pull several GB of CUDA packages); elsewhere it is the platform's normal wheel.
	$(PIP) install -q torch==2.13.0
	$(PIP) install -q -e ".[cli,test,batch,coco,plots,metrics,dicom]"
	# Meta's reference, for the parity tests only: no CUDA build step, no torchvision.
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation --no-deps sam2==1.1.0
	touch $@

env: $(VENV)/.installed

# Both test targets print their wall time (make test-fast: under 3 minutes on 2 cores; make test: at most 10).
test: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q --durations=10; status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time"; exit $$status

test-fast: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q -m "not slow"; status=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s wall time"; exit $$status

demo: $(VENV)/.installed
	$(VENV)/bin/sam2s demo --output-dir demo_output --overwrite $(if $(wildcard $(DEMO_DATA)/video.mp4),--data $(DEMO_DATA))

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check SAM2SSlicer Testing benchmarks
	$(VENV)/bin/ruff check SAM2SSlicer Testing benchmarks
	cd SAM2SSlicer && $(abspath $(VENV))/bin/lint-imports ../pyproject.toml

clean:
	rm -rf $(VENV) demo_output
