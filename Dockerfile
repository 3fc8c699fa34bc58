# The illustrator consumer on an NVIDIA GPU: `docker run --gpus all IMAGE`
# (entry point `illustrator`, command `run`). Model weights are not baked in;
# they are read from the cache volume (filled from MODEL_S3_PATH or a hub cache).
FROM nvidia/cuda:12.8.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# The CUDA base tag pins the distribution; package versions follow its
# security updates rather than being frozen here.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates python3.11 python3.11-venv \
    && rm -rf /var/lib/apt/lists/*

# A fixed uid, so a host directory mounted as the cache can be owned by it.
RUN useradd --uid 10001 --user-group --create-home --shell /usr/sbin/nologin illustrator \
    && install -d -o illustrator -g illustrator /var/cache/illustrator

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH
RUN python3.11 -m venv /opt/venv

WORKDIR /src
# Dependencies first, in their own layer, so a code change does not reinstall
# torch. The pin torch==2.13.0 takes the registry's CUDA build on Linux x86_64.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; print('\n'.join(p['dependencies'] + p['optional-dependencies']['gpu']))" > requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r requirements.txt
COPY README.md ./
COPY consumer/ consumer/
COPY pipeline/ pipeline/
RUN pip install --no-cache-dir --no-deps . \
    && rm -rf /src/build

# Weights and downloaded artefacts live on the volume and survive restarts;
# the hub is never contacted at run time.
# Expandable segments: jobs of every size come and go on one GPU, and the
# caching allocator would otherwise fragment until a job that fits runs out
# of memory.
ENV MODEL_CACHE_DIR=/var/cache/illustrator \
    HF_HOME=/var/cache/illustrator/huggingface \
    HF_HUB_OFFLINE=1 \
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
