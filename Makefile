# The two commands a new user needs: `make demo` and `make test`. Both create
# .venv at the repo root when it is missing and install skvlm into it, with every
# package at the exact version of the lock file (requirements/lock.txt).
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
LOCK := requirements/lock.txt
# The CPU build of torch that this machine's disk holds (see constraints/cpu.txt).
CONSTRAINTS ?= constraints/cpu.txt
EXTRAS ?= dev,docs,ray,plot,tuning
STAMP := $(VENV)/.skvlm-installed
# torchvision, beside (not in) the environment: tests/test_torchvision_world.py
# runs skvlm with it in a subprocess, the world of users who have it.
TORCHVISION_WORLD := $(VENV)/torchvision-world
PYTEST_ARGS ?=
comma := ,
PIP := -m pip install --quiet --disable-pip-version-check
# Where pip finds the local CPU build of torch; `make lock` hands it to uv, which
# does not read pip's configuration.
FIND_LINKS ?= $(PIP_FIND_LINKS)

.PHONY: install demo test test-oldest test-oldest-sklearn test-latest lock lock-oldest lint docs bench train-models clean

# Exactly the locked set: every package, direct and transitive, --no-deps so pip
# adds nothing the lock does not name; then skvlm itself, and pip's own check.
$(STAMP): pyproject.toml $(LOCK) requirements/torchvision.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) $(PIP) --no-deps -r $(LOCK)
	$(PY) $(PIP) --no-deps -e .
	$(PY) -m pip check
	rm -rf $(TORCHVISION_WORLD)
	$(PY) $(PIP) --no-deps --target $(TORCHVISION_WORLD) -r requirements/torchvision.txt
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(VENV)/bin/skvlm probe --threads 1 --out skvlm-report

test: install
	$(PY) -m pytest -n 2 --dist loadgroup $(PYTEST_ARGS)
	$(MAKE) test-oldest-sklearn
	$(MAKE) docs

# Re-resolve the lock from pyproject.toml's ranges (newest allowed versions), for
# Python 3.11 on x86-64 Linux. Then run `make test-latest` and `make test`, and
# commit the new lock with the versions it moved in the message.
lock:
	test -x $(VENV)/bin/uv || $(MAKE) install
	$(VENV)/bin/uv pip compile pyproject.toml $(foreach e,$(subst $(comma), ,$(EXTRAS)),--extra $(e)) \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		$(if $(FIND_LINKS),--find-links $(FIND_LINKS)) -c $(CONSTRAINTS) \
		--no-header --annotation-style line -o $(LOCK).new
	printf '%s\n' "# Every package of \`make test\`, direct and transitive, at the version last tested" \
		"# green. Made by \`make lock\` (uv pip compile of pyproject.toml, Python 3.11, x86-64" \
		"# Linux, the CPU build of torch); installed with --no-deps, so nothing else comes in." \
		| cat - $(LOCK).new > $(LOCK) && rm $(LOCK).new

# The canary: the newest release of every dependency that pyproject.toml admits,
# no lock, in its own environment made anew each time. torch stays at the CPU
# build of constraints/cpu.txt (CONSTRAINTS=/dev/null lifts that).
LATEST := .venv-latest
test-latest:
	rm -rf $(LATEST)
	$(PYTHON) -m venv $(LATEST)
	$(LATEST)/bin/python $(PIP) --upgrade -c $(CONSTRAINTS) -e ".[$(EXTRAS)]"
	$(LATEST)/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|scikit-learn|peft|accelerate|numpy|tokenizers|huggingface.hub)=='
	$(LATEST)/bin/python -m pytest -n 2 --dist loadgroup -q $(PYTEST_ARGS)

# The oldest set: the lowest version of every direct dependency that
# pyproject.toml admits (uv's lowest-direct resolution), in its own environment,
# on the tests that lean on those libraries' APIs.
OLDEST := .venv-oldest
OLDEST_LOCK := requirements/oldest.txt
OLDEST_SUITE ?= tests/models tests/classifiers tests/tuning tests/testing \
	tests/test_common.py tests/test_sklearn_compat.py tests/test_embedding.py \
	tests/selection tests/inspection/test_permutation.py tests/test_architecture.py
$(OLDEST)/.installed: pyproject.toml $(OLDEST_LOCK)
	rm -rf $(OLDEST)
	$(PYTHON) -m venv $(OLDEST)
	$(OLDEST)/bin/python $(PIP) --no-deps -r $(OLDEST_LOCK)
	$(OLDEST)/bin/python $(PIP) --no-deps -e .
	$(OLDEST)/bin/python -m pip check
	touch $@

test-oldest: $(OLDEST)/.installed
	$(OLDEST)/bin/python -m pip list --format=freeze | grep -iE '^(torch|transformers|scikit-learn|peft|accelerate|numpy|tokenizers|huggingface.hub)=='
	$(OLDEST)/bin/python -m pytest -n 2 --dist loadgroup -q -p no:cacheprovider $(OLDEST_SUITE)

# Regenerate the oldest set after a lower bound in pyproject.toml moved.
lock-oldest:
	test -x $(VENV)/bin/uv || $(MAKE) install
	$(VENV)/bin/uv pip compile pyproject.toml --extra dev --extra tuning --resolution lowest-direct \
		--python-version 3.11 --python-platform x86_64-manylinux_2_28 \
		--no-header --annotation-style line -o $(OLDEST_LOCK)

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
	rm -rf docs/_build skvlm-report .pytest_cache $(LATEST) $(OLDEST)
