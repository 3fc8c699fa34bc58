# The illustrator consumer on an NVIDIA GPU: `docker run --gpus all IMAGE`
# (entry point `illustrator`, command `run`). Model weights are not baked in;
# they are read from the cache volume (filled from MODEL_S3_PATH or a hub cache).
#
# BASE: the CUDA runtime by default, pinned by digest (the manifest list, so
# the tag cannot move under a rebuild), on Ubuntu 24.04: Ubuntu 22.04's
# python3.11 is a release candidate (3.11.0rc1) under which torch cannot be
# imported. `make image` builds the same file on a Debian bookworm base made
# here (no registry needed) for the container tests, with PYTHON=python3.11;
# the package names below follow that one argument on both distributions.
ARG BASE=nvidia/cuda:12.8.1-cudnn-runtime-ubuntu24.04@sha256:ac55d124da4882b497f732d8dfd9a702d5447a5f29d08d56da6f64f0a1eb34bc
FROM ${BASE}
ARG PYTHON=python3.12

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# g++ and the Python headers are what compiling needs at run time
# (TORCH_COMPILE): Triton builds its CUDA launcher with the host's C compiler
# against Python.h, and inductor's CPU code is C++. Nothing else to build with.
# The venv package makes the virtual environment and goes in the same layer,
# with the pip and setuptools wheels it brings (named, not auto-removed: on
# Ubuntu that would also take the distutils the environment's pip imports).
# The base pins the distribution; package versions follow its security
# updates rather than being frozen here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates g++ \
        "$PYTHON" "$PYTHON-dev" "$PYTHON-venv" \
    && "$PYTHON" -m venv "$VIRTUAL_ENV" \
    && apt-get purge -y "$PYTHON-venv" python3-pip-whl python3-setuptools-whl \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb

# A fixed uid, so a host directory mounted as the cache can be owned by it.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin illustrator \
    && install -d -o illustrator -g illustrator /var/cache/illustrator

# pip's sources: PyPI, unless the build mounts a configuration at
# /mnt/pip.conf (`make image` mounts this machine's there, with its local
# indexes, for the build only: see image/pip_sources.py).
# The project's files are copied below /tmp and removed by the step that
# installs them, so the running image holds only the installed packages;
# copied rather than bind-mounted, so that every engine's layer cache sees
# when they change (Buildah's does not look into a mount).
# Dependencies first, in their own layer, so a code change does not reinstall
# torch. The pin torch==2.13.0 takes the registry's CUDA build on Linux x86_64.
COPY pyproject.toml constraints.txt /tmp/project/
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/project/pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p.get('optional-dependencies', {}).get('gpu', [])))" > /tmp/requirements.txt \
    && PIP_CONFIG_FILE=/mnt/pip.conf pip install --no-cache-dir -c /tmp/project/constraints.txt -r /tmp/requirements.txt \
    && rm -r /tmp/requirements.txt /tmp/project

# The project itself, then pip is removed: the running image installs
# nothing. open_clip_torch contributes only CLIP's BPE vocabulary, which the
# built-in test model builtin:tiny reads (without --no-deps it would pull
# torchvision).
COPY pyproject.toml constraints.txt README.md /tmp/project/
COPY consumer/ /tmp/project/consumer/
COPY pipeline/ /tmp/project/pipeline/
WORKDIR /tmp/project
RUN export PIP_CONFIG_FILE=/mnt/pip.conf \
    && pip install --no-cache-dir -c constraints.txt '.[gpu]' \
    && pip install --no-cache-dir --no-deps -c constraints.txt open-clip-torch \
    && pip uninstall --yes pip \
    && rm -r /tmp/project

# Weights, downloaded artefacts and compiled kernels live on the volume and
# survive restarts (a restart with TORCH_COMPILE reuses inductor's and
# Triton's caches instead of compiling from cold); the hub is never
# contacted at run time. The root filesystem may be read-only: the process
# writes only there and to /tmp.
# Expandable segments: jobs of every size come and go on one GPU, and the
# caching allocator would otherwise fragment until a job that fits runs out
# of memory.
ENV MODEL_CACHE_DIR=/var/cache/illustrator \
    HF_HOME=/var/cache/illustrator/huggingface \
    HF_HUB_OFFLINE=1 \
    TORCHINDUCTOR_CACHE_DIR=/var/cache/illustrator/torchinductor \
    TRITON_CACHE_DIR=/var/cache/illustrator/triton \
    HEALTH_PORT=8080 \
    PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
VOLUME ["/var/cache/illustrator"]

USER 10001:10001
WORKDIR /home/illustrator
EXPOSE 8080
# Liveness (/livez), not readiness: a worker paused by an AWS outage or
# draining answers /health 503 and must not be marked unhealthy for it.
# The start period covers loading SDXL (and a first download from S3).
HEALTHCHECK --interval=30s --timeout=5s --start-period=600s --retries=3 \
    CMD ["illustrator", "health", "--live"]
ENTRYPOINT ["illustrator"]
CMD ["run"]
