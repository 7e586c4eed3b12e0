# The two commands a new user needs: `make demo` and `make test`. Both create
# .venv at the repo root when it is missing and install skvlm into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= dev,docs,ray,plot,tuning
STAMP := $(VENV)/.skvlm-installed
PYTEST_ARGS ?=

.PHONY: install demo test test-oldest-sklearn lint docs bench train-models clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/skvlm probe --threads 1 --out skvlm-report

test: install
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)
	$(MAKE) test-oldest-sklearn
	$(MAKE) docs

# The oldest supported scikit-learn goes alone into a folder put first on
# PYTHONPATH; everything else comes from $(VENV). The tests that lean on
# sklearn's API (estimator checks, private names, scorers) run against it.
SKLEARN_OLDEST := $(VENV)/sklearn-oldest
OLDEST_PIN := constraints/sklearn-oldest.txt
OLDEST_TESTS ?= tests/test_common.py tests/test_sklearn_compat.py skvlm/_sklearn_compat.py \
	tests/classifiers/test_linear_probe.py tests/selection tests/inspection/test_permutation.py

$(SKLEARN_OLDEST)/.installed: $(OLDEST_PIN) $(STAMP)
	rm -rf $(SKLEARN_OLDEST)
	$(PY) -m pip install --quiet --disable-pip-version-check --no-deps --target $(SKLEARN_OLDEST) -r $(OLDEST_PIN)
	touch $@

test-oldest-sklearn: install $(SKLEARN_OLDEST)/.installed
	PYTHONPATH=$(abspath $(SKLEARN_OLDEST))$(if $(PYTHONPATH),:$(PYTHONPATH)) $(PY) -c "import re, sklearn; \
	pin = re.search(r'^scikit-learn==(\S+)', open('$(OLDEST_PIN)').read(), re.M)[1]; \
	assert sklearn.__version__ == pin, (sklearn.__version__, pin); \
	print('scikit-learn', pin, 'from', sklearn.__file__)"
	PYTHONPATH=$(abspath $(SKLEARN_OLDEST))$(if $(PYTHONPATH),:$(PYTHONPATH)) $(PY) -m pytest -n 2 --dist loadgroup -q $(OLDEST_TESTS)

# Not part of `make test`: a newer ruff may add rules, and CI should test behaviour.
lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

docs: install
	$(PY) -m sphinx -W --keep-going -q -b html docs docs/_build/html

bench: install
	$(PY) benchmarks/run_all.py $(BENCH)

# Retrain the tiny models shipped in skvlm/_data/models (deterministic, minutes on CPU).
train-models: install
	$(PY) scripts/train_embedded_models.py --out skvlm/_data/models

clean:
	rm -rf docs/_build skvlm-report .pytest_cache
