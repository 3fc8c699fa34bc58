# Two commands matter: `make demo` runs the whole path here, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo test lint bench soak schema clean

setup: $(STAMP)

# Re-installs only when the project's dependencies change.
$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -c constraints.txt -e '.[dev]'
	# builtin:tiny reads CLIP's real BPE vocabulary from open_clip_torch, which
	# is a file source only: without --no-deps it would pull torchvision.
	$(BIN)/python -m pip install -q --no-deps -c constraints.txt open-clip-torch
	touch $(STAMP)

demo: setup
	$(BIN)/illustrator demo

test: setup
	$(BIN)/pytest

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy --strict consumer pipeline
	$(BIN)/lint-imports
	$(BIN)/bandit -q -c pyproject.toml -r consumer pipeline
	$(BIN)/cfn-lint infra/illustrator.yaml
	$(BIN)/hadolint Dockerfile

bench: setup
	$(BIN)/python -m bench

soak: setup
	$(BIN)/python -m tests.soak

schema: setup
	$(BIN)/illustrator schema --write docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output
