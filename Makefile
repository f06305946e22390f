# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
BACKENDS ?= jax torch tensorflow
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-slow fuzz bench lint package-check docs docs-serve clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# The default install: attnkit with its default backend (JAX), plus the plots the
# dates demo saves (the `viz` extra: matplotlib).
$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PIP) -e ".[viz]"
	@touch $@

# Everything the tests need: all three backends, every extra (`all`) and the test tools.
$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) -e ".[all,test]"
	@touch $@ $(VENV)/.demo-installed $(VENV)/.docs-installed

demo: $(VENV)/.demo-installed
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(VENV)/bin/attnkit info
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(VENV)/bin/attnkit demo dates

# The whole suite once per backend, in the same venv, on TEST_WORKERS
# processes (pytest-xdist). Most of a test's time is spent compiling or
# dispatching small ops on one core (JAX compiles every op for every new
# shape), so a second worker puts the CI machine's second core to use.
# TEST_WORKERS=0 runs in this process (no xdist), e.g. for pdb. Tests marked
# backend_independent run in the first backend's suite only.
TEST_WORKERS ?= 2
test: $(VENV)/.test-installed package-check docs
	@set -e; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b"; \
		KERAS_BACKEND=$$b ATTNKIT_BACKEND_INDEPENDENT_ON=$(firstword $(BACKENDS)) \
			$(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS); \
	done

# The package as users get it: build the sdist and the wheel (from the sdist), install
# the wheel into a fresh venv with only its own dependencies (Keras, NumPy, JAX; pip's
# cache makes this a copy, not a download; the venv's pip is .venv's, and bytecode is
# compiled on import, only for what is imported: about a minute saved), check that matplotlib and scikit-learn did
# not come along, run `attnkit info` and tests/scripts/package_smoke.py (imports, one
# epoch of a tiny Attention model, py.typed, the extras' messages) there, outside the
# source tree so the wheel is what is imported; then add the `viz` extra (what `make demo`
# installs) and run one short epoch of the dates demo there, which must print its
# exact-match line and write its PNG and .keras model. Once per `make test`, not per backend.
PACKAGE_CHECK := build/package-check
WHEEL_VENV := $(PACKAGE_CHECK)/venv
WHEEL_PIP := $(PY) -m pip --python $(WHEEL_VENV)/bin/python install --quiet \
	--disable-pip-version-check --no-compile
# Runs what follows inside the wheel's venv, with its own Keras home and no backend chosen.
IN_WHEEL_VENV := cd $(WHEEL_VENV) && export KERAS_HOME=$(CURDIR)/$(PACKAGE_CHECK)/keras-home \
	&& unset KERAS_BACKEND &&
DEMO_CHECK := $(CURDIR)/$(PACKAGE_CHECK)/demo
VERSION = $(shell sed -n 's/^version = "\([^"]*\)"/\1/p' pyproject.toml | head -n 1)
package-check: $(VENV)/.test-installed
	@rm -rf $(PACKAGE_CHECK) && mkdir -p $(PACKAGE_CHECK)
	$(PY) -m build --outdir $(PACKAGE_CHECK)/dist . > $(PACKAGE_CHECK)/build.log 2>&1 \
		|| { cat $(PACKAGE_CHECK)/build.log; exit 1; }
	$(PYTHON) -m venv --without-pip $(WHEEL_VENV)
	$(WHEEL_PIP) $(PACKAGE_CHECK)/dist/attnkit-*.whl
	@$(IN_WHEEL_VENV) bin/attnkit info && \
		bin/python $(CURDIR)/tests/scripts/package_smoke.py $(VERSION)
	$(WHEEL_PIP) "$$(ls $(PACKAGE_CHECK)/dist/attnkit-*.whl)[viz]"
	@$(IN_WHEEL_VENV) bin/attnkit demo dates --epochs 1 --samples 512 --test-samples 64 \
		--out $(DEMO_CHECK) > $(DEMO_CHECK).log 2>&1 || { cat $(DEMO_CHECK).log; exit 1; }
	@grep -E '^exact-match .*/64\)$$' $(DEMO_CHECK).log \
		&& test -s $(DEMO_CHECK)/dates_attention.png && test -s $(DEMO_CHECK)/dates.keras \
		&& echo "package-check: the demo install wrote $(DEMO_CHECK)/dates_attention.png and dates.keras" \
		|| { echo "package-check: the dates demo did not produce its accuracy line, PNG and .keras"; \
		     cat $(DEMO_CHECK).log; exit 1; }

# The documentation site: MkDocs in strict mode (a broken link, a missing page or an
# unresolved API reference fails the build), offline (no fonts, CDN or inventories
# fetched; MathJax comes from the docs extra), into site/: open site/index.html. Its
# hooks draw the figures (docs/hooks/figures.py, cached by a hash of their sources) and
# the benchmark plots (docs/hooks/benchmarks_plots.py) first. Once per `make test`, not
# per backend; the pages' code blocks and the docstring examples run in the suite on
# every backend (tests/test_docs_examples.py, tests/test_docstring_examples.py).
MKDOCS := NO_MKDOCS_2_WARNING=1 $(VENV)/bin/mkdocs
$(VENV)/.docs-installed: pyproject.toml | $(PY)
	$(PIP) -e ".[docs]"
	@touch $@

docs: $(VENV)/.docs-installed
	$(MKDOCS) build --strict --quiet

# Serves the site at http://127.0.0.1:8000 and rebuilds it on every change.
docs-serve: $(VENV)/.docs-installed
	$(MKDOCS) serve --strict

# Long training runs (paper reproductions, demo accuracy).
test-slow: $(VENV)/.test-installed
	@set -e; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b (slow)"; \
		KERAS_BACKEND=$$b $(PY) -m pytest -q -m slow $(PYTEST_ARGS); \
	done

# Property-based fuzzing: >= 10 000 hypothesis examples of the attention core and
# >= 10 000 of the layers (tests/test_layer_properties.py), across the three backends.
# Examples per property and backend, set by each backend's speed on new shapes
# (JAX compiles every op for every new shape: about 0.5 s an ops example and 3 s
# a layer example; torch runs about 60 ops and 12 layer examples a second,
# TensorFlow 25 and 3). Ops: 3 properties x (200 + 2000 + 1200) = 10 200 examples
# in about 10 minutes; layers: 200 + 6500 + 3300 = 10 000 examples in about 35
# minutes, on 2 idle cores. Both counts are printed at the end.
FUZZ_EXAMPLES_jax ?= 200
FUZZ_EXAMPLES_torch ?= 2000
FUZZ_EXAMPLES_tensorflow ?= 1200
FUZZ_LAYER_EXAMPLES_jax ?= 200
FUZZ_LAYER_EXAMPLES_torch ?= 6500
FUZZ_LAYER_EXAMPLES_tensorflow ?= 3300
FUZZ_LOG := $(VENV)/fuzz-examples.log
fuzz: $(VENV)/.test-installed
	@set -e; rm -f $(FUZZ_LOG); for b in $(BACKENDS); do \
		case $$b in jax) n=$(FUZZ_EXAMPLES_jax); m=$(FUZZ_LAYER_EXAMPLES_jax);; \
			torch) n=$(FUZZ_EXAMPLES_torch); m=$(FUZZ_LAYER_EXAMPLES_torch);; \
			tensorflow) n=$(FUZZ_EXAMPLES_tensorflow); m=$(FUZZ_LAYER_EXAMPLES_tensorflow);; esac; \
		echo "=== KERAS_BACKEND=$$b (fuzz, $$n examples per ops property, $$m layer examples)"; \
		KERAS_BACKEND=$$b HYPOTHESIS_PROFILE=fuzz ATTNKIT_FUZZ_EXAMPLES=$$n \
			ATTNKIT_FUZZ_LAYER_EXAMPLES=$$m ATTNKIT_FUZZ_LOG=$(FUZZ_LOG) \
			$(PY) -m pytest -q -s -p no:randomly tests/test_properties.py \
			tests/test_layer_properties.py $(PYTEST_ARGS); \
	done; \
	awk '$$1 == "layers" {l += $$3; next} {n += $$2} END {printf "make fuzz: %d ops-level and %d layer-level hypothesis examples on %s, 0 failures\n", n, l, "$(BACKENDS)"}' $(FUZZ_LOG)

bench: $(VENV)/.test-installed
	$(VENV)/bin/attnkit bench

# ruff, and mypy over the attnkit package (configured in pyproject.toml).
lint: $(VENV)/.test-installed
	$(PIP) "ruff>=0.5" "mypy==2.4.1"
	$(VENV)/bin/ruff check attnkit tests
	$(VENV)/bin/mypy

clean:
	rm -rf $(VENV) build dist *.egg-info attnkit-out site docs/generated
