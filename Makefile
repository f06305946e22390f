# Two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check
BACKENDS ?= jax torch tensorflow
PYTEST_ARGS ?=

.PHONY: demo test test-fast test-slow fuzz bench lint clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PIP) --upgrade pip

# The default install: attnkit with its default backend (JAX).
$(VENV)/.demo-installed: pyproject.toml | $(PY)
	$(PIP) -e .
	@touch $@

# Everything the tests need: all three backends and the test tools.
$(VENV)/.test-installed: pyproject.toml | $(PY)
	$(PIP) -e ".[all,test]"
	@touch $@ $(VENV)/.demo-installed

demo: $(VENV)/.demo-installed
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(VENV)/bin/attnkit info
	KERAS_BACKEND=$${KERAS_BACKEND:-jax} $(VENV)/bin/attnkit demo dates

# The whole suite once per backend, in the same venv, on TEST_WORKERS
# processes (pytest-xdist). Most of a test's time is spent compiling or
# dispatching small ops on one core (JAX compiles every op for every new
# shape), so a second worker puts the CI machine's second core to use.
# TEST_WORKERS=0 runs in this process (no xdist), e.g. for pdb.
TEST_WORKERS ?= 2
test: $(VENV)/.test-installed
	@set -e; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b"; \
		KERAS_BACKEND=$$b $(PY) -m pytest -q -n $(TEST_WORKERS) $(PYTEST_ARGS); \
	done

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

lint: $(VENV)/.test-installed
	$(PIP) "ruff>=0.5"
	$(VENV)/bin/ruff check attnkit tests

clean:
	rm -rf $(VENV) build *.egg-info attnkit-out
