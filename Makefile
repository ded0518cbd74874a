# Two entry points: `make demo` (install + run the main job on the embedded synthetic dataset)
# and `make test` (install + run the test suite). Both create or refresh .venv on a fresh machine.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR ?= runs/demo

.PHONY: demo test install clean

install: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# xtcocotools (CrowdPose metrics) is built against this numpy: its PyPI wheel is compiled for another numpy ABI;
	# setuptools and wheel because a fresh venv's setuptools may lack bdist_wheel.
	$(BIN)/python -m pip install --quiet cython numpy setuptools wheel
	$(BIN)/python -m pip install --quiet --no-binary xtcocotools --no-build-isolation 'xtcocotools>=1.14'
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/distill demo --out $(DEMO_DIR)

test: $(STAMP)
	$(BIN)/python -m pytest -q

clean:
	rm -rf $(VENV) runs .pytest_cache
