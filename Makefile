# Two set-up commands on a fresh machine: `make demo` and `make test` (README "Quick start").
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# The web app's environment (README "Web app"): trame-slicer 2.0.0 needs slicer-core 5.11, the rest
# of the project runs on 5.11 and on the newest slicer-core (5.13 in .venv): two environments.
VENV_WEB ?= .venv-web
PY_WEB := $(VENV_WEB)/bin/python
DEMO_DATA ?= ../shared/data/endoscapes_v4
WEB_TESTS := Testing/Python/web

.PHONY: test test-fast test-web fuzz demo web lint env env-web clean

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

$(VENV_WEB)/.installed: pyproject.toml Makefile
	python3 -m venv $(VENV_WEB)
	$(PY_WEB) -m pip install -q --upgrade pip setuptools wheel
	$(PY_WEB) -m pip install -q torch==2.13.0
	$(PY_WEB) -m pip install -q -e ".[web,webtest,test,coco]"
	touch $@

env: $(VENV)/.installed

env-web: $(VENV_WEB)/.installed

# Both test targets print their wall time (make test-fast: under 3 minutes on 2 cores; make test: at most 10).
# make test: the suite in .venv, then the browser tests of the web app in .venv-web (Chromium from
# Debian: apt-get install chromium; .ci/run installs it).
test: $(VENV)/.installed $(VENV_WEB)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q --durations=10 --ignore=$(WEB_TESTS); status=$$?; \
	$(PY_WEB) -m pytest -q -rs $(WEB_TESTS); webStatus=$$?; \
	echo "make test: $$(( $$(date +%s) - start )) s wall time"; [ $$status -eq 0 ] && [ $$webStatus -eq 0 ]

test-fast: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q -m "not slow" --ignore=$(WEB_TESTS); status=$$?; \
	echo "make test-fast: $$(( $$(date +%s) - start )) s wall time"; exit $$status

# make fuzz: every fuzz property (Testing/Python/fuzzing.py) with 10,000 random examples each; prints the
# counts per property and fails when one ran fewer (README "Fuzzing").
fuzz: $(VENV)/.installed
	@start=$$(date +%s); $(PY) -m pytest -q -m fuzz -p no:cacheprovider --hypothesis-profile=fuzz --ignore=$(WEB_TESTS); \
	status=$$?; echo "make fuzz: $$(( $$(date +%s) - start )) s wall time"; exit $$status

test-web: $(VENV_WEB)/.installed
	$(PY_WEB) -m pytest -q -rs -s $(WEB_TESTS)

demo: $(VENV)/.installed
	$(VENV)/bin/sam2s demo --output-dir demo_output --overwrite $(if $(wildcard $(DEMO_DATA)/video.mp4),--data $(DEMO_DATA))

# The web app on http://127.0.0.1:8080/ with the demo clip (or pass WEB_ARGS="VIDEO --allow-path DIR ...").
WEB_ARGS ?= $(if $(wildcard $(DEMO_DATA)/video.mp4),$(DEMO_DATA)/video.mp4 --allow-path $(DEMO_DATA))
web: $(VENV_WEB)/.installed
	$(VENV_WEB)/bin/sam2s web $(WEB_ARGS)

lint: $(VENV)/.installed
	$(VENV)/bin/ruff format --check SAM2SSlicer Testing benchmarks
	$(VENV)/bin/ruff check SAM2SSlicer Testing benchmarks
	cd SAM2SSlicer && $(abspath $(VENV))/bin/lint-imports ../pyproject.toml

clean:
	rm -rf $(VENV) $(VENV_WEB) demo_output
