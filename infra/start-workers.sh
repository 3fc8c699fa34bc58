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
#
# It runs at every boot (the user data at the first, the unit
# illustrator-workers.service at later ones) and first reads the instance's
# target lifecycle state from the instance metadata. An instance launched
# into the group's warm pool (Warmed:*) is prepared and no worker starts:
# the image is pulled, `illustrator prefetch` puts the weights on the volume,
# and the launch hook's action is completed, so the group stops it. When it
# later leaves the pool (or when an instance launches straight into service)
# the workers start, and once one is healthy the launch hook's action is
# completed: the instance enters service with a model loaded.
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
LAUNCH_HOOK=${LAUNCH_HOOK:-illustrator-ready}
BOOT_ID_FILE=${BOOT_ID_FILE:-/proc/sys/kernel/random/boot_id}
INSTANCE_ID=""

say() { echo "start-workers: $*" >&2; }

# One run at a time (the user data and the unit could meet at a first boot).
exec 9> "$CONF/start-workers.lock"
if ! flock -n 9; then
  say "already running"
  exit 0
fi

# Deadlines count from this boot: a warm-pool instance boots again, maybe
# days later, when it leaves the pool. A list of workers from an earlier
# boot names containers that are gone.
BOOT_ID=$(cat "$BOOT_ID_FILE" 2> /dev/null || echo unknown)
if [ ! -s "$CONF/boot-started" ] || [ "$(cat "$CONF/boot-id" 2> /dev/null)" != "$BOOT_ID" ]; then
  date +%s > "$CONF/boot-started"
  echo "$BOOT_ID" > "$CONF/boot-id"
  rm -f "$CONF/workers"
fi
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

# imds_read PATH: the metadata value into REPLY; 1 when the service fails,
# 2 when the path does not exist (404).
imds_read() {
  local token code
  token=$(curl -sf -X PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300") ||
    return 1
  code=$(curl -s -o "$CONF/imds.out" -w '%{http_code}' -H "X-aws-ec2-metadata-token: $token" \
    "$IMDS/meta-data/$1") || return 1
  REPLY=$(cat "$CONF/imds.out" 2> /dev/null || true)
  rm -f "$CONF/imds.out"
  case "$code" in
    200) return 0 ;;
    404) return 2 ;;
    *) return 1 ;;
  esac
}

instance_id() {
  imds_read instance-id && INSTANCE_ID=$REPLY && [ -n "$INSTANCE_ID" ]
}
retry "reading the instance id" instance_id
printf 'INSTANCE_ID=%s\n' "$INSTANCE_ID" > "$CONF/instance.env"

# The state Auto Scaling is moving this instance to; outside a group (404)
# the instance serves.
target_state() {
  local status=0
  imds_read autoscaling/target-lifecycle-state || status=$?
  case "$status" in
    0) TARGET_STATE=$REPLY ;;
    2) TARGET_STATE=InService ;;
    *) return 1 ;;
  esac
  [ -n "$TARGET_STATE" ]
}
TARGET_STATE=""
retry "reading the target lifecycle state" target_state
say "target lifecycle state: $TARGET_STATE"

# Complete the launch hook's action: the instance goes on to the warm pool
# (stopped) or into service. Without a group, or with no action waiting (a
# rerun by hand), there is nothing to complete; the hook's timeout covers an
# Auto Scaling that cannot be reached.
complete_launch() {
  local group attempt
  if ! imds_read "tags/instance/aws:autoscaling:groupName" || [ -z "$REPLY" ]; then
    say "not in an Auto Scaling group: no launch hook to complete"
    return 0
  fi
  group=$REPLY
  for attempt in 1 2 3; do
    if aws autoscaling complete-lifecycle-action --region "$AWS_REGION" \
      --auto-scaling-group-name "$group" --lifecycle-hook-name "$LAUNCH_HOOK" \
      --instance-id "$INSTANCE_ID" --lifecycle-action-result CONTINUE; then
      say "completed $LAUNCH_HOOK for $INSTANCE_ID in $group"
      return 0
    fi
    sleep "$((attempt * RETRY_BASE_S))"
  done
  say "could not complete $LAUNCH_HOOK; its timeout applies"
}

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

# The signing token never passes through here: the worker reads it from Secrets
# Manager itself (AUTH_TOKEN_SECRET_ID), so no environment or file holds it.
ENV_FILE="$CONF/illustrator.env"

REGISTRY=${IMAGE%%/*}
ecr_login() {
  aws ecr get-login-password --region "$AWS_REGION" |
    docker login --username AWS --password-stdin "$REGISTRY"
}
case "$REGISTRY" in
  *.dkr.ecr.*.amazonaws.com) retry "logging in to $REGISTRY" ecr_login ;;
esac
retry "pulling $IMAGE" docker pull "$IMAGE"

# Every container's output goes to the stack's log group, a stream each.
LOGS=(--log-driver awslogs
  --log-opt "awslogs-region=$AWS_REGION" --log-opt "awslogs-group=$LOG_GROUP")

# A warm-pool instance: the weights onto the volume, no worker, then stopped.
prefetch() {
  docker run --rm --name illustrator-prefetch --env-file "$ENV_FILE" \
    -v "$CACHE_DIR:/var/cache/illustrator" \
    "${LOGS[@]}" --log-opt "awslogs-stream=$INSTANCE_ID-prefetch" \
    "$IMAGE" prefetch
}
case "$TARGET_STATE" in
  Warmed:*)
    retry "fetching the weights" prefetch
    : > "$CONF/workers" # nothing for the watchdog to watch
    complete_launch
    say "ready for the warm pool: image pulled, weights cached, no worker running"
    exit 0
    ;;
esac

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
    "${LOGS[@]}" --log-opt "awslogs-stream=$INSTANCE_ID-gpu$n" \
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
complete_launch
