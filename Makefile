# Two commands matter: `make demo` runs the whole path here, `make test` the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
# The image `make image` builds and `make test-image` runs.
IMAGE_TAG ?= localhost/illustrator:test

.PHONY: setup demo test test-unit test-iam test-outages test-slim test-inputs image test-image lint bench soak schema clean

setup: $(STAMP)

# Re-installs only when the project's dependencies change.
# One line per phase, and pip's own progress: a fresh set-up takes about 2 minutes.
$(STAMP): pyproject.toml constraints.txt tests/iam/policy_sim/package-lock.json
	@echo "setup 1/4: virtual environment $(VENV)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@echo "setup 2/4: pip"
	@$(BIN)/python -m pip install --progress-bar on --upgrade pip
	@echo "setup 3/4: the project with its pipeline (gpu extra) and development tools, pinned by constraints.txt (the longest phase)"
	@$(BIN)/python -m pip install --progress-bar on -c constraints.txt -e '.[gpu,dev]'
	@# builtin:tiny reads CLIP's real BPE vocabulary from open_clip_torch, a file
	@# source only here: without --no-deps it would pull torchvision.
	@$(BIN)/python -m pip install --no-deps -c constraints.txt open-clip-torch
	@# The IAM policy evaluator of the tests (iam-simulate, a Node library).
	@echo "setup 4/4: the tests' IAM policy evaluator (npm, pinned by its lock file)"
	@npm ci --prefix tests/iam/policy_sim --no-audit --no-fund --loglevel=error
	@touch $(STAMP)
	@echo "setup done: $(VENV)"

# The demo's model is MODEL_PATH from the environment (not .env), else builtin:tiny.
demo: setup
	@echo "demo: embedded AWS, sample pictures, one memory and one subject job"
	$(BIN)/illustrator demo

# Every layer, the IAM one included, but the minutes-long faults, outages and
# soak (`make test-outages`, which CI runs after this one).
test: setup
	$(BIN)/pytest -m "not outages"

# The unit layer alone: no moto, no torch, under a minute.
test-unit: setup
	$(BIN)/pytest tests/unit

# The IAM layer alone: the template deployed into a moto server that enforces
# IAM, the consumer run with the template's own roles (about a minute).
test-iam: setup
	$(BIN)/pytest tests/iam

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

# The scenarios in real time `make test` leaves out: faults injected into
# each kind of call; a 5 s and a 10-minute outage (on a fast clock) of each
# service, five drains, holds past OUTAGE_HOLD_S; S3, SNS and SQS each out for
# 90 s with the production retry defaults, side by side; and the short chaos
# soak (about 7 minutes).
test-outages: setup
	OUTAGE_SOAK=1 $(BIN)/pytest -q -m outages tests/reliability tests/chaos

# An operator's install (pip install ., no pipeline) in a throwaway venv, each
# operator command run from it against moto (about 2 minutes).
test-slim: setup
	SLIM_INSTALL=1 $(BIN)/pytest -q tests/install

# The worst input picture of each format and mode at the pixel cap, prepared as
# a worker does, within its time and memory bounds; prints the table of
# docs/contract.md section 2 (about 2 minutes, most of it building the pictures).
test-inputs: setup
	INPUT_CAP=1 $(BIN)/pytest -q -s tests/corpus/test_worst_inputs.py

schema: setup
	$(BIN)/illustrator schema --write docs

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache demo-output
