# The two Quickstart commands, `make demo` and `make test`, need only python3 and make:
# each creates or refreshes .venv from pyproject.toml, pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BACKENDS ?= tensorflow jax torch
# Two workers: most tests wait on Python overhead, not arithmetic, on two cores.
PYTEST_ARGS ?= -n 2
# The dev environment runs all three backends side by side. tensorflow-cpu is the same
# TensorFlow without the GPU kernels; torch==2.13.0 is pinned to the CPU wheel.
BACKEND_PACKAGES := tensorflow-cpu jax[cpu] torch

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONPATH := $(CURDIR)/src$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: venv test test-backend test-oldest demo docs docs-pictures bench bench-quick lint clean typecheck test-install

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]" $(BACKEND_PACKAGES)
	touch $@

venv: $(STAMP)

# One full pytest run per backend; any failure (or a run that collects nothing,
# pytest's exit code 5) stops make with an error.
test: $(STAMP)
	@set -e; for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b"; \
	  KERAS_BACKEND=$$b $(BIN)/python -m pytest $(PYTEST_ARGS); \
	done

# The oldest Keras that pyproject.toml admits, in its own .venv-oldest pinned by
# constraints-oldest.txt. TensorFlow 2.21 needs keras>=3.12, so this leg runs the whole
# suite on JAX, then CustomModel and the callbacks on torch.
OLDEST_VENV := .venv-oldest
OLDEST_STAMP := $(OLDEST_VENV)/.installed-stamp
OLDEST_TORCH_TESTS := tests/test_models.py tests/test_models_workflows.py tests/test_callbacks.py

$(OLDEST_STAMP): pyproject.toml constraints-oldest.txt
	test -x $(OLDEST_VENV)/bin/python || $(PYTHON) -m venv $(OLDEST_VENV)
	$(OLDEST_VENV)/bin/python -m pip install --quiet --upgrade pip
	$(OLDEST_VENV)/bin/python -m pip install --quiet -c constraints-oldest.txt -e ".[dev]" jax[cpu] torch
	touch $@

test-oldest: $(OLDEST_STAMP)
	@set -e; \
	echo "=== oldest Keras, KERAS_BACKEND=jax"; \
	KERAS_BACKEND=jax $(OLDEST_VENV)/bin/python -m pytest $(PYTEST_ARGS); \
	echo "=== oldest Keras, KERAS_BACKEND=torch"; \
	KERAS_BACKEND=torch $(OLDEST_VENV)/bin/python -m pytest $(PYTEST_ARGS) $(OLDEST_TORCH_TESTS)

# Benchmarks against the Keras built-ins, one process per backend (and per device, CPU
# then a CUDA GPU if the backend sees one): benchmarks/results/<device>-<backend>.json,
# then the tables and chart made from them. Run it on a quiet machine.
bench: $(STAMP)
	@status=0; for b in $(BACKENDS); do \
	  echo "=== bench KERAS_BACKEND=$$b"; \
	  KERAS_BACKEND=$$b $(BIN)/python -m benchmarks.run --backend $$b || status=1; \
	done; \
	$(BIN)/python -m benchmarks.report && exit $$status

# The same code on tiny sizes, into a temp folder: proves it runs, measures nothing.
# `make test` runs it too, as tests/test_benchmarks.py.
bench-quick: $(STAMP)
	@set -e; out=$$(mktemp -d); for b in $(BACKENDS); do \
	  KERAS_BACKEND=$$b $(BIN)/python -m benchmarks.run --quick --backend $$b --out $$out; \
	done; \
	$(BIN)/python -m benchmarks.report --results $$out

# The command silences TensorFlow's start-up logging itself unless TF_CPP_MIN_LOG_LEVEL
# is set, so the default above (for the tests) is not passed on; a user's own value is.
demo: $(STAMP)
	$(if $(filter file,$(origin TF_CPP_MIN_LOG_LEVEL)),env -u TF_CPP_MIN_LOG_LEVEL )$(BIN)/python -m keras_extras_cli demo

# Warnings are errors, and every page is rebuilt (-E) so none is hidden by a cache.
docs: $(STAMP)
	$(BIN)/python -m sphinx -W --keep-going -E -b html docs docs/_build/html

# The pictures in docs/guide/watching_training.rst: its notebook cells, run in a Jupyter
# kernel. A test fails when the page's code no longer matches its pictures.
docs-pictures: $(STAMP)
	mkdir -p docs/_static
	KERAS_BACKEND=jax KERAS_EXTRAS_DOCS_PICTURES=1 $(BIN)/python -m pytest -p no:cacheprovider \
	  tests/test_notebook.py -k guide_notebook

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks docs examples tests_install

# --- The package as users install it (tests_install/, docs/contributing.rst) ---

# mypy, at the strictness set in pyproject.toml.
typecheck: $(STAMP)
	$(BIN)/mypy

# Builds the sdist and the wheel (twine-checked; the sdist must build the same wheel),
# then per backend a fresh virtual environment with only that backend's extra, where
# the README's commands run as written. pip's cache is reused. INSTALL_BACKENDS limits it.
INSTALL_BACKENDS ?= $(BACKENDS)
test-install: $(STAMP)
	KERAS_EXTRAS_TEST_BACKENDS="$(INSTALL_BACKENDS)" \
	  $(BIN)/python -m pytest tests_install -p no:cacheprovider --durations=0

clean:
	rm -rf $(VENV) $(OLDEST_VENV) docs/_build .pytest_cache .hypothesis keras-extras-demo
