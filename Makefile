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

# The whole suite once per backend, in the same venv.
test: $(VENV)/.test-installed
	@set -e; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b"; \
		KERAS_BACKEND=$$b $(PY) -m pytest -q $(PYTEST_ARGS); \
	done

# Long training runs (paper reproductions, demo accuracy).
test-slow: $(VENV)/.test-installed
	@set -e; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b (slow)"; \
		KERAS_BACKEND=$$b $(PY) -m pytest -q -m slow $(PYTEST_ARGS); \
	done

# Property-based fuzzing: >= 10 000 hypothesis examples across the three backends.
FUZZ_EXAMPLES ?= 3400
fuzz: $(VENV)/.test-installed
	@set -e; for b in $(BACKENDS); do \
		echo "=== KERAS_BACKEND=$$b (fuzz, $(FUZZ_EXAMPLES) examples per property)"; \
		KERAS_BACKEND=$$b HYPOTHESIS_PROFILE=fuzz ATTNKIT_FUZZ_EXAMPLES=$(FUZZ_EXAMPLES) \
			$(PY) -m pytest -q -s -p no:randomly tests/test_properties.py $(PYTEST_ARGS); \
	done

bench: $(VENV)/.test-installed
	$(VENV)/bin/attnkit bench

lint: $(VENV)/.test-installed
	$(PIP) "ruff>=0.5"
	$(VENV)/bin/ruff check attnkit tests

clean:
	rm -rf $(VENV) build *.egg-info attnkit-out
