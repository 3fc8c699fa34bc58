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
set -euo pipefail

CONF=${ILLUSTRATOR_CONF:-/etc/illustrator}
# shellcheck source=/dev/null
. "$CONF/fleet.env"
CACHE_DIR=${CACHE_DIR:-/var/cache/illustrator}
BASE_PORT=${BASE_PORT:-8080}
IMDS=${IMDS:-http://169.254.169.254/latest}

TOKEN=$(curl -sf -X PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300")
INSTANCE_ID=$(curl -sf -H "X-aws-ec2-metadata-token: $TOKEN" "$IMDS/meta-data/instance-id")
printf 'INSTANCE_ID=%s\n' "$INSTANCE_ID" > "$CONF/instance.env"

# `nvidia-smi -L` prints one "GPU <n>: <name> (UUID: ...)" line per device.
GPUS=$(nvidia-smi -L | grep -c '^GPU ' || true)
if [ "$GPUS" -lt 1 ]; then
  echo "start-workers: nvidia-smi lists no GPU" >&2
  exit 1
fi

# The container runs as uid 10001 (see the Dockerfile) and writes the cache.
install -d -m 0750 "$CACHE_DIR"
if [ "$(id -u)" = 0 ]; then chown 10001:10001 "$CACHE_DIR"; fi

ENV_FILE="$CONF/illustrator.env"
secret() {
  aws secretsmanager get-secret-value --region "$AWS_REGION" --secret-id "$AUTH_SECRET_ARN" \
    --version-stage "$1" --query SecretString --output text
}
if [ -n "${AUTH_SECRET_ARN:-}" ]; then
  CURRENT=$(secret AWSCURRENT)
  printf 'AUTH_ENABLED=true\nAUTH_TOKEN=%s\n' "$CURRENT" >> "$ENV_FILE"
  # During a rotation the previous token is still accepted (docs/operations.md).
  if PREVIOUS=$(secret AWSPREVIOUS 2>/dev/null); then
    printf 'AUTH_TOKEN_PREVIOUS=%s\n' "$PREVIOUS" >> "$ENV_FILE"
  fi
  unset CURRENT PREVIOUS
fi

REGISTRY=${IMAGE%%/*}
case "$REGISTRY" in
  *.dkr.ecr.*.amazonaws.com)
    aws ecr get-login-password --region "$AWS_REGION" \
      | docker login --username AWS --password-stdin "$REGISTRY" ;;
esac
docker pull "$IMAGE"

: > "$CONF/workers.new"
for ((N = 0; N < GPUS; N++)); do
  NAME="illustrator-gpu$N"
  PORT=$((BASE_PORT + N))
  # A rerun (by hand, after a change) replaces the container rather than failing.
  docker rm -f "$NAME" > /dev/null 2>&1 || true
  # --restart: a worker that exits (fatal error) comes back; the stop timeout
  # covers DRAIN_TIMEOUT_S should docker stop it.
  docker run -d --name "$NAME" --restart always --gpus "device=$N" \
    --stop-timeout "$STOP_TIMEOUT" \
    --env-file "$ENV_FILE" \
    -e "HEALTH_PORT=$PORT" -e "WORKER_ID=$INSTANCE_ID-gpu$N" \
    -p "127.0.0.1:$PORT:$PORT" \
    -v "$CACHE_DIR:/var/cache/illustrator" \
    --log-driver awslogs \
    --log-opt "awslogs-region=$AWS_REGION" \
    --log-opt "awslogs-group=$LOG_GROUP" \
    --log-opt "awslogs-stream=$INSTANCE_ID-gpu$N" \
    "$IMAGE"
  printf '%s %s\n' "$NAME" "$PORT" >> "$CONF/workers.new"
done
mv "$CONF/workers.new" "$CONF/workers"
echo "start-workers: $GPUS worker(s) started on $INSTANCE_ID"
