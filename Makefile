# The two commands a new user needs: `make demo` and `make test`. Both create
# .venv at the repo root when it is missing and install skvlm into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= dev,docs,ray,plot,tuning
STAMP := $(VENV)/.skvlm-installed
PYTEST_ARGS ?=

.PHONY: install demo test lint docs bench train-models clean

$(STAMP): pyproject.toml $(CONSTRAINTS)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/skvlm probe --threads 1 --out skvlm-report

test: install
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)
	$(MAKE) docs

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
