# Two set-up commands on a fresh machine: `make demo` and `make test` (README "Quick start").
# One environment, .venv, for everything: the command line, the tests, the web app (trame-slicer
# 2.0.0 needs slicer-core 5.11, which the whole project runs on).
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# torch's wheel: on our CPU machines `torch==2.13.0` takes the local CPU build. Elsewhere PyPI's
# wheel for Linux is a CUDA build of several GB; a CPU-only machine takes the CPU build with
# `make env TORCH_INDEX=https://download.pytorch.org/whl/cpu` (README "Quick start").
TORCH_INDEX ?=
DEMO_DATA ?= ../shared/data/endoscapes_v4
EXTRAS := cli,test,batch,coco,plots,metrics,dicom,web,webtest

.PHONY: test test-fast test-heavy test-web fuzz demo web lint env clean factory-test

$(VENV)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV)
	$(PIP) install -q --upgrade pip setuptools wheel
	# torch first, pinned (a bare `torch` would pull several GB of CUDA packages on Linux).
	$(PIP) install -q torch==2.13.0 $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PIP) install -q -e ".[$(EXTRAS)]"
	# Meta's reference, for the parity tests only: no CUDA build step, no torchvision.
	SAM2_BUILD_CUDA=0 $(PIP) install -q --no-build-isolation --no-deps sam2==1.1.0
	# EdgeTAM's reference (its import package is also `sam2`): in a folder of its own, with timm for its
	# RepViT trunk; the tests run it in a subprocess (benchmarks/edgetam_reference.py).
	$(PIP) install -q --no-deps --target $(VENV)/edgetam-ref edgetam-dimos==1.0.1 timm==1.0.31 \
		huggingface_hub==0.26.5 safetensors==0.4.5
	touch $@

env: $(VENV)/.installed

# Both test targets print their wall time (make test-fast: under 3 minutes on 2 cores; make test: at most 10).
# make test runs everything, the web app's browser tests included (Chromium from Debian: apt-get
# install chromium; .ci/run installs it; without it they skip, saying so).
test: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q -rs --durations=10 -m "not heavy"; status=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time"; exit $$status

# The longest end-to-end checks (marker "heavy", about 4 minutes), apart so that make test stays
# within 10 minutes on 2 cores; .ci/run runs them after make test.
test-heavy: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q -rs -m heavy; status=$$?; \
	echo "make test-heavy: $$(( $$(date +%s) - start )) s wall time"; exit $$status

test-fast: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q -m "not slow"; status=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s wall time"; exit $$status

# make factory-test: Slicer's extension factory (no PyTorch, no PyAV, none of the packages the
# extension installs on first use) modelled by a venv with slicer-core, numpy and pillow only; the
# module test's Qt-free part runs in it (Testing/Factory/run_module_test.py, issue 23 acceptance 6).
FACTORY_VENV ?= .venv-factory
factory-test:
	rm -rf $(FACTORY_VENV)
	python3 -m venv $(FACTORY_VENV)
	$(FACTORY_VENV)/bin/python -m pip install -q "slicer-core>=5.11.0.6,<5.12" "numpy>=1.23" "pillow>=9.1"
	$(FACTORY_VENV)/bin/python Testing/Factory/run_module_test.py

# make fuzz: every fuzz property (Testing/Python/fuzzing.py) with 10,000 random examples each; prints the
# counts per property and fails when one ran fewer (README "Fuzzing").
fuzz: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q -m fuzz -p no:cacheprovider --hypothesis-profile=fuzz; \
	status=$$?; echo "make fuzz: $$(( $$(date +%s) - start )) s wall time"; exit $$status

test-web: $(VENV)/.installed
	$(PY) -m pytest -q -rs -s Testing/Python/web

demo: $(VENV)/.installed
	$(VENV)/bin/sam2s demo --output-dir demo_output --overwrite $(if $(wildcard $(DEMO_DATA)/video.mp4),--data $(DEMO_DATA))

# The web app on http://127.0.0.1:8080/ with the demo clip (or pass WEB_ARGS="VIDEO --allow-path DIR ...").
WEB_ARGS ?= $(if $(wildcard $(DEMO_DATA)/video.mp4),$(DEMO_DATA)/video.mp4 --allow-path $(DEMO_DATA))
web: $(VENV)/.installed
	$(VENV)/bin/sam2s web $(WEB_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check SAM2SSlicer Testing benchmarks
	$(VENV)/bin/ruff check SAM2SSlicer Testing benchmarks
	cd SAM2SSlicer && $(abspath $(VENV))/bin/lint-imports ../pyproject.toml

clean:
	rm -rf $(VENV) demo_output
