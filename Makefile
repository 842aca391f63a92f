# Kiln: the two commands that matter are `make demo` and `make test`.
PYTHON ?= python3.11
VENV   := .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.kiln-installed
NODE_STAMP := node_modules/.kiln-installed
OUT    ?= out/demo
# Blender 5.2 LTS (bpy 5.2.3) is a Python 3.13 wheel: tests/blender also runs on it, in its own venv.
PYTHON313 ?= $(firstword $(wildcard $(HOME)/.pyenv/versions/3.13*/bin/python3.13 /usr/local/bin/python3.13 /usr/bin/python3.13))
BPY52  := .venv-bpy52
BPY52_STAMP := $(BPY52)/.kiln-installed

.PHONY: setup demo test lint format extension bench clean

setup: $(STAMP) $(NODE_STAMP)

$(STAMP): requirements.txt constraints.txt pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.txt -c constraints.txt
	$(PY) -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

$(BPY52_STAMP): requirements-bpy52.txt
	@test -n "$(PYTHON313)" || { echo "make: Blender 5.2's bpy needs Python 3.13; install it (pyenv install 3.13) or pass PYTHON313=/path/to/python3.13"; exit 1; }
	test -x $(BPY52)/bin/python || $(PYTHON313) -m venv $(BPY52)
	$(BPY52)/bin/pip install -q --disable-pip-version-check -r requirements-bpy52.txt
	touch $@

$(NODE_STAMP): package.json package-lock.json
	npm ci --no-audit --no-fund --loglevel=error
	touch $@

demo: setup
	$(PY) tools/demo.py --out $(OUT)

test: setup lint $(BPY52_STAMP)
	$(PY) -m pytest
	@echo "== tests/blender again on Blender 5.2 ($(BPY52)) =="
	KILN_TEST_BPY_PYTHON=$(abspath $(BPY52))/bin/python $(PY) -m pytest tests/blender -q

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
	rm -rf $(VENV) $(BPY52) node_modules dist out .pytest_cache .ruff_cache
