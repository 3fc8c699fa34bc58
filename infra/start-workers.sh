#!/bin/bash
# Starts one illustrator container per GPU of this instance.
#
# Container N gets GPU N only (--gpus device=N), health port 8080+N published
# on loopback for the watchdog, WORKER_ID <instance-id>-gpuN (the id in events
# and in the metric records), and its own log stream; all of them share the
# model cache, whose downloads are locked per object. It writes the list of
# containers to $ILLUSTRATOR_CONF/workers, one "name port" per line, for
# infra/watchdog.sh. Settings come from $ILLUSTRATOR_CONF/fleet.env (written
# by the user data) and the service's own from $ILLUSTRATOR_CONF/illustrator.env.
#
# Boots heal: every step retries a failure with backoff (RETRY_BASE_S doubling
# up to RETRY_MAX_S) until BOOT_HEALTHY_S after boot ($ILLUSTRATOR_CONF/boot-started).
# The script then waits for a worker to answer /health with its model loaded
# (ready, or paused by an AWS outage). If a step still fails, or no worker is
# healthy by then, the instance reports itself Unhealthy to its Auto Scaling
# group, which replaces it; if even that cannot be done (no instance id), it
# powers off, which the group's EC2 health check also replaces.
# A paid instance never sits idle.
set -euo pipefail

CONF=${ILLUSTRATOR_CONF:-/etc/illustrator}
# shellcheck source=/dev/null
. "$CONF/fleet.env"
CACHE_DIR=${CACHE_DIR:-/var/cache/illustrator}
BASE_PORT=${BASE_PORT:-8080}
IMDS=${IMDS:-http://169.254.169.254/latest}
BOOT_HEALTHY_S=${BOOT_HEALTHY_S:-900}
RETRY_BASE_S=${RETRY_BASE_S:-2}
RETRY_MAX_S=${RETRY_MAX_S:-60}
HEALTH_POLL_S=${HEALTH_POLL_S:-10}
INSTANCE_ID=""

say() { echo "start-workers: $*" >&2; }

if [ ! -s "$CONF/boot-started" ]; then date +%s > "$CONF/boot-started"; fi
DEADLINE=$(($(cat "$CONF/boot-started") + BOOT_HEALTHY_S))

# The instance cannot serve: have the group replace it, by any means left.
give_up() {
  say "$1; giving up"
  if [ -n "$INSTANCE_ID" ]; then
    local attempt
    for attempt in 1 2 3 4 5; do
      if aws autoscaling set-instance-health --region "$AWS_REGION" \
        --instance-id "$INSTANCE_ID" --health-status Unhealthy \
        --no-should-respect-grace-period; then
        say "marked $INSTANCE_ID Unhealthy"
        exit 1
      fi
      sleep "$attempt"
    done
  fi
  say "cannot report to Auto Scaling: powering off"
  shutdown -h now
  exit 1
}

# retry WHAT COMMAND...: run COMMAND until it succeeds; give up at the deadline.
retry() {
  local what=$1 delay=$RETRY_BASE_S attempt=1
  shift
  until "$@"; do
    if [ "$(date +%s)" -ge "$DEADLINE" ]; then
      give_up "$what still fails after $attempt attempt(s)"
    fi
    say "$what failed (attempt $attempt); again in ${delay}s"
    sleep "$delay"
    delay=$((delay * 2))
    if [ "$delay" -gt "$RETRY_MAX_S" ]; then delay=$RETRY_MAX_S; fi
    attempt=$((attempt + 1))
  done
}

instance_id() {
  local token
  token=$(curl -sf -X PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300") &&
    INSTANCE_ID=$(curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/instance-id") &&
    [ -n "$INSTANCE_ID" ]
}
retry "reading the instance id" instance_id
printf 'INSTANCE_ID=%s\n' "$INSTANCE_ID" > "$CONF/instance.env"

# `nvidia-smi -L` prints one "GPU <n>: <name> (UUID: ...)" line per device;
# right after boot the driver may not list them yet.
count_gpus() {
  GPUS=$(nvidia-smi -L | grep -c '^GPU ') && [ "$GPUS" -ge 1 ]
}
GPUS=0
retry "nvidia-smi listing a GPU" count_gpus

# The container runs as uid 10001 (see the Dockerfile) and writes the cache.
install -d -m 0750 "$CACHE_DIR"
if [ "$(id -u)" = 0 ]; then chown 10001:10001 "$CACHE_DIR"; fi

ENV_FILE="$CONF/illustrator.env"
secret() {
  aws secretsmanager get-secret-value --region "$AWS_REGION" --secret-id "$AUTH_SECRET_ARN" \
    --version-stage "$1" --query SecretString --output text
}
current_token() { CURRENT=$(secret AWSCURRENT) && [ -n "$CURRENT" ]; }
if [ -n "${AUTH_SECRET_ARN:-}" ]; then
  CURRENT=""
  retry "reading the auth token secret" current_token
  # A rerun replaces the tokens written before rather than adding to them.
  grep -v '^AUTH_\(ENABLED\|TOKEN\|TOKEN_PREVIOUS\)=' "$ENV_FILE" > "$ENV_FILE.new" || true
  mv "$ENV_FILE.new" "$ENV_FILE"
  printf 'AUTH_ENABLED=true\nAUTH_TOKEN=%s\n' "$CURRENT" >> "$ENV_FILE"
  # During a rotation the previous token is still accepted (docs/operations.md);
  # outside one there is no AWSPREVIOUS, so one try is enough.
  if PREVIOUS=$(secret AWSPREVIOUS 2> /dev/null); then
    printf 'AUTH_TOKEN_PREVIOUS=%s\n' "$PREVIOUS" >> "$ENV_FILE"
  fi
  unset CURRENT PREVIOUS
fi

REGISTRY=${IMAGE%%/*}
ecr_login() {
  aws ecr get-login-password --region "$AWS_REGION" |
    docker login --username AWS --password-stdin "$REGISTRY"
}
case "$REGISTRY" in
  *.dkr.ecr.*.amazonaws.com) retry "logging in to $REGISTRY" ecr_login ;;
esac
retry "pulling $IMAGE" docker pull "$IMAGE"

start_worker() {
  local n=$1 name="illustrator-gpu$1" port=$((BASE_PORT + $1))
  # A rerun (by hand, after a change) replaces the container rather than failing.
  docker rm -f "$name" > /dev/null 2>&1 || true
  # --restart: a worker that exits (fatal error) comes back; the stop timeout
  # covers DRAIN_TIMEOUT_S should docker stop it. The root filesystem is
  # read-only: the worker writes the cache volume (weights, compiled kernels)
  # and /tmp only. tests/image runs this command line against the built image.
  docker run -d --name "$name" --restart always --gpus "device=$n" \
    --stop-timeout "$STOP_TIMEOUT" \
    --read-only --tmpfs /tmp \
    --env-file "$ENV_FILE" \
    -e "HEALTH_PORT=$port" -e "WORKER_ID=$INSTANCE_ID-gpu$n" \
    -p "127.0.0.1:$port:$port" \
    -v "$CACHE_DIR:/var/cache/illustrator" \
    --log-driver awslogs \
    --log-opt "awslogs-region=$AWS_REGION" \
    --log-opt "awslogs-group=$LOG_GROUP" \
    --log-opt "awslogs-stream=$INSTANCE_ID-gpu$n" \
    "$IMAGE"
}

: > "$CONF/workers.new"
for ((N = 0; N < GPUS; N++)); do
  retry "starting illustrator-gpu$N" start_worker "$N"
  printf '%s %s\n' "illustrator-gpu$N" "$((BASE_PORT + N))" >> "$CONF/workers.new"
done
mv "$CONF/workers.new" "$CONF/workers"
say "$GPUS worker(s) started on $INSTANCE_ID"

# Started means the model is loaded: GET /health answers 200 (ready or busy),
# or 503 in the state "paused": an AWS service is out, the worker waits for
# it, and a new instance would fare no better.
started_up() {
  local body
  body=$(curl -s --max-time 5 "http://127.0.0.1:$1/health") || return 1
  grep -Eq '"state": *"(ready|busy|paused)"' <<< "$body"
}
any_healthy() {
  local name port
  while read -r name port; do
    if started_up "$port"; then
      say "$name is healthy"
      return 0
    fi
  done < "$CONF/workers"
  return 1
}
until any_healthy; do
  if [ "$(date +%s)" -ge "$DEADLINE" ]; then
    give_up "no worker healthy ${BOOT_HEALTHY_S}s after boot"
  fi
  sleep "$HEALTH_POLL_S"
done
