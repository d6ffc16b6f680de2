# granulemap developer commands. `make demo` and `make test` work on a fresh clone: they build the venv first.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Looked for once (not at each use), so that its message, when it finds none, is printed once.
ifeq ($(origin PYTHON312),undefined)
PYTHON312 := $(shell scripts/find-python312)
endif
STAMP := $(VENV)/.installed

.PHONY: venv test test-fast demo validate build bench clean

venv: $(STAMP)

$(STAMP): pyproject.toml requirements-dev.txt constraints.txt layers/common/requirements.txt
	@test -n "$(PYTHON312)" || { echo "no Python 3.12 found (see scripts/find-python312)"; exit 1; }
	test -x $(PY) || $(PYTHON312) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt -c constraints.txt
	$(PY) -m pip install --quiet --no-deps -e .
	touch $(STAMP)

## The whole test suite: science, handlers, local executions of the state machine, template and SAM checks.
test: venv
	$(VENV)/bin/pytest -q

## Without the slow tests (local executions, sam build).
test-fast: venv
	$(VENV)/bin/pytest -q -m "not slow"

## The main job: the local pipeline over the real MUR25 granule plus a synthetic month made from it.
demo: venv
	$(PY) scripts/demo.py --out out/demo

validate: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/sam validate --lint --region us-west-2

## The layer with your recipes (layers/common/recipes.txt, README's tutorial) is built anew every time: SAM's cache
## sees only layers/common/, not your recipe's own folder. SAMFLAGS: more options for sam build.
build: venv
	PATH=$(CURDIR)/$(VENV)/bin:$$PATH $(VENV)/bin/sam build --region us-west-2 \
		$(shell test -s layers/common/recipes.txt && echo --no-cached) $(SAMFLAGS)

bench: venv
	$(PY) bench/run.py --write BENCHMARKS.md

clean:
	rm -rf .aws-sam out demo-data
