# Two commands matter: `make demo` runs the whole path here, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The image `make image` builds and `make test-image` runs.
IMAGE_TAG ?= localhost/illustrator:test

.PHONY: setup demo test test-unit test-outages image test-image lint bench soak schema clean

setup: $(STAMP)

# Re-installs only when the project's dependencies change.
# One line per phase, and pip's own progress: a fresh set-up takes about 2 minutes.
$(STAMP): pyproject.toml constraints.txt
	@echo "setup 1/3: virtual environment $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup 2/3: pip"
	@$(BIN)/python -m pip install --progress-bar on --upgrade pip
	@echo "setup 3/3: the project and its development tools, pinned by constraints.txt (the longest phase)"
	@$(BIN)/python -m pip install --progress-bar on -c constraints.txt -e '.[dev]'
	@# builtin:tiny reads CLIP's real BPE vocabulary from open_clip_torch, a file
	@# source only here: without --no-deps it would pull torchvision.
	@$(BIN)/python -m pip install --no-deps -c constraints.txt open-clip-torch
	@touch $(STAMP)
	@echo "setup done: $(VENV)"

# The demo's model is MODEL_PATH from the environment (not .env), else builtin:tiny.
demo: setup
	@echo "demo: embedded AWS, sample pictures, one memory and one subject job"
	$(BIN)/illustrator demo

test: setup
	$(BIN)/pytest

# The unit layer alone: no moto, no torch, under a minute.
test-unit: setup
	$(BIN)/pytest tests/unit

# The container image, built here: Docker where its daemon answers, else
# Podman (installed with apt-get when missing, as are Buildah, runc and
# debootstrap), on a Debian bookworm base made here once (BASE=... for
# another, such as the CUDA base). Prints its progress and size; the last
# line is the reference it tagged (about 9 minutes from cold, seconds when
# nothing changed).
image:
	@IMAGE_TAG=$(IMAGE_TAG) bash image/build.sh

# The built image run as deployed: infra/start-workers.sh's own command line
# with one pretend GPU, jobs end to end against moto, health check, user,
# read-only root, drain, compiling, contents (2 to 6 minutes, as root).
test-image: setup image
	ILLUSTRATOR_IMAGE=$(IMAGE_TAG) $(BIN)/pytest -q tests/image

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
	$(BIN)/python -m tests.chaos.soak
	@$(MAKE) --no-print-directory test-outages

# The outage scenarios `make test` skips: S3, SNS and SQS each out for 90 s in
# real time, with the production retry defaults, side by side (about 2 minutes).
test-outages: setup
	OUTAGE_SOAK=1 $(BIN)/pytest -q -k 90s tests/reliability/test_outages.py

schema: setup
	$(BIN)/illustrator schema --write docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output
