# The two Quickstart commands, `make demo` and `make test`, need only python3 and make:
# each creates or refreshes .venv from pyproject.toml, pinned by constraints.txt.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
BACKENDS ?= tensorflow jax torch
# Two workers: most tests wait on Python overhead, not arithmetic, on two cores.
PYTEST_ARGS ?= -n 2
# JAX's persistent compilation cache, shared by every run of the suite (make test,
# test-oldest, test-keras) and the processes they start. JAX reuses an executable only
# for the same program, JAX version and compiler flags, so a run tests what it would
# without the cache; the JAX runs take about half as long, as do the Keras releases'
# runs after the first. Not for `make bench`, which times compilations.
JAX_CACHE := $(CURDIR)/.jax-cache
TEST_ENV := JAX_COMPILATION_CACHE_DIR=$(JAX_CACHE) JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS=0 \
  JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES=-1 JAX_COMPILATION_CACHE_MAX_SIZE=1073741824
# The dev environment runs all three backends side by side. tensorflow-cpu is the same
# TensorFlow without the GPU kernels; torch==2.13.0 is pinned to the CPU wheel.
BACKEND_PACKAGES := tensorflow-cpu jax[cpu] torch

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONPATH := $(CURDIR)/src$(if $(PYTHONPATH),:$(PYTHONPATH))

.PHONY: venv test test-backend test-oldest test-keras test-keras-matrix demo docs docs-pictures bench bench-quick lint clean typecheck test-install

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]" $(BACKEND_PACKAGES)
	touch $@

venv: $(STAMP)

# One full pytest run per backend; any failure (or a run that collects nothing,
# pytest's exit code 5) stops make with an error.
test: $(STAMP)
	$(if $(strip $(BACKENDS)),,$(error BACKENDS is empty))
	@set -e; for b in $(BACKENDS); do \
	  echo "=== KERAS_BACKEND=$$b"; \
	  $(TEST_ENV) KERAS_BACKEND=$$b $(BIN)/python -m pytest $(PYTEST_ARGS); \
	done

# --- Keras releases: one environment, .venv-keras, with JAX and torch (no TensorFlow:
# 2.21 needs keras>=3.12), pinned by constraints-oldest.txt; each target first swaps in
# the Keras it tests. docs/install.rst lists what each leg runs.

# The suite's files that exercise Keras's API: the components, their steps and the
# private Keras names behind them. Run on every Keras release CI covers.
CORE_TESTS := tests/test_metrics.py tests/test_backends.py tests/test_rmse_in_models.py \
  tests/test_models.py tests/test_models_workflows.py tests/test_layers.py \
  tests/test_callbacks.py tests/test_history.py tests/test_keras_internals.py tests/conformance
# The latest patch of every minor release between the floor (make test-oldest) and the
# newest (make test, constraints.txt); `make test-keras-matrix` runs each on JAX, and
# keras-nightly on JAX and torch.
KERAS_RELEASES := 3.11.3 3.12.4 3.13.2 3.14.1
KERAS_VENV := .venv-keras
KERAS_STAMP := $(KERAS_VENV)/.installed-stamp
KERAS_PIP := $(KERAS_VENV)/bin/python -m pip
# constraints-oldest.txt without its keras line, so that any Keras can be installed.
KERAS_CONSTRAINTS := $(KERAS_VENV)/constraints-but-keras.txt
FLOOR_KERAS := $(shell sed -n 's/^keras==//p' constraints-oldest.txt)

$(KERAS_STAMP): pyproject.toml constraints-oldest.txt
	test -x $(KERAS_VENV)/bin/python || $(PYTHON) -m venv $(KERAS_VENV)
	$(KERAS_PIP) install --quiet --upgrade pip
	$(KERAS_PIP) install --quiet -c constraints-oldest.txt -e ".[dev]" jax[cpu] torch
	grep -v '^keras==' constraints-oldest.txt > $(KERAS_CONSTRAINTS)
	touch $@

# Installs Keras $(1) (a release, or `nightly` for the newest keras-nightly) in
# .venv-keras and checks that `import keras` gets it: a release by its version, the
# nightly by its package (its version string is whatever that night's is). keras and
# keras-nightly install the same files, so both go before either comes. The nightly is
# pinned like the rest; should it need a newer dependency than constraints-oldest.txt
# holds, pip's message is printed and it is installed unpinned, so the leg still runs.
define use-keras
@set -e; py="env KERAS_BACKEND=jax $(KERAS_VENV)/bin/python"; \
pip="$$py -m pip --quiet --disable-pip-version-check"; \
if [ "$(1)" = nightly ]; then \
  $$pip uninstall --quiet -y keras keras-nightly; \
  $$pip install --pre -c $(KERAS_CONSTRAINTS) keras-nightly \
    || { echo "keras-nightly needs newer dependencies than constraints-oldest.txt pins;" \
              "installing them unpinned" >&2; $$pip install --pre keras-nightly; }; \
  if $$pip show keras >/dev/null 2>&1; then echo "keras is installed too" >&2; exit 1; fi; \
else \
  $$pip uninstall --quiet -y keras-nightly; \
  $$pip install -c $(KERAS_CONSTRAINTS) "keras==$(1)"; \
  got=$$($$py -c 'import keras; print(keras.__version__)'); \
  if [ "$$got" != "$(1)" ]; then echo "import keras gives $$got, not $(1)" >&2; exit 1; fi; \
fi; \
$$py -c "import keras, importlib.metadata as m; \
  print('keras', keras.__version__, 'from', m.packages_distributions()['keras'])"
endef

# The oldest Keras that pyproject.toml admits (constraints-oldest.txt): the whole suite
# on JAX, the core suite on torch.
test-oldest: $(KERAS_STAMP)
	$(call use-keras,$(FLOOR_KERAS))
	@set -e; \
	echo "=== Keras $(FLOOR_KERAS) (oldest), KERAS_BACKEND=jax"; \
	$(TEST_ENV) KERAS_BACKEND=jax $(KERAS_VENV)/bin/python -m pytest $(PYTEST_ARGS); \
	echo "=== Keras $(FLOOR_KERAS) (oldest), KERAS_BACKEND=torch"; \
	$(TEST_ENV) KERAS_BACKEND=torch $(KERAS_VENV)/bin/python -m pytest $(PYTEST_ARGS) $(CORE_TESTS)

# The core suite on one Keras: `make test-keras KERAS=3.12.4 BACKENDS=jax`, or
# KERAS=nightly. BACKENDS may name jax and torch, both if it is not given (there is no
# TensorFlow here). Hypothesis runs its "matrix" profile (tests/conftest.py) unless
# HYPOTHESIS_PROFILE says otherwise.
KERAS_BACKENDS = $(if $(filter file,$(origin BACKENDS)),jax torch,$(BACKENDS))
test-keras: $(KERAS_STAMP)
	$(if $(KERAS),,$(error KERAS is not set: make test-keras KERAS=3.12.4 BACKENDS=jax))
	$(if $(strip $(KERAS_BACKENDS)),,$(error BACKENDS is empty))
	$(if $(filter-out jax torch,$(KERAS_BACKENDS)),$(error .venv-keras has jax and torch only, not: $(filter-out jax torch,$(KERAS_BACKENDS))))
	$(call use-keras,$(KERAS))
	@set -e; for b in $(KERAS_BACKENDS); do \
	  echo "=== Keras $(KERAS), KERAS_BACKEND=$$b"; \
	  $(TEST_ENV) KERAS_BACKEND=$$b HYPOTHESIS_PROFILE=$${HYPOTHESIS_PROFILE:-matrix} \
	    $(KERAS_VENV)/bin/python -m pytest $(PYTEST_ARGS) $(CORE_TESTS); \
	done

# CI's matrix: every release in KERAS_RELEASES on JAX, then keras-nightly on JAX and torch.
test-keras-matrix: $(KERAS_STAMP)
	@set -e; for k in $(KERAS_RELEASES); do \
	  $(MAKE) --no-print-directory test-keras KERAS=$$k BACKENDS=jax; \
	done; \
	$(MAKE) --no-print-directory test-keras KERAS=nightly BACKENDS="jax torch"

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
	$(if $(strip $(INSTALL_BACKENDS)),,$(error INSTALL_BACKENDS is empty))
	KERAS_EXTRAS_TEST_BACKENDS="$(INSTALL_BACKENDS)" \
	  $(BIN)/python -m pytest tests_install -p no:cacheprovider --durations=0

clean:
	rm -rf $(VENV) $(KERAS_VENV) $(JAX_CACHE) docs/_build .pytest_cache .hypothesis keras-extras-demo
