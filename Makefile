# Kiln: the two commands that matter are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kiln-installed
NODE_STAMP := node_modules/.kiln-installed
OUT    ?= out/demo

.PHONY: setup demo test lint format extension bench clean

setup: $(STAMP) $(NODE_STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PY) tools/demo.py --out $(OUT)

test: setup lint
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

extension: $(STAMP)
	$(PY) tools/build_extension.py

bench: setup
	$(PY) -m bench.assets
	$(PY) -m bench.text_to_3d
	$(PY) -m bench.avatar_eval
	$(PY) -m bench.photo_avatar_eval
	$(PY) -m bench.server
	$(PY) -m bench.addon_turntable

clean:
	rm -rf $(VENV) node_modules dist out .pytest_cache .ruff_cache
