#!/bin/bash
# One pass of the worker watchdog (a systemd timer runs it every 30 s).
#
# For each container in $ILLUSTRATOR_CONF/workers ("name port" lines, written
# by start-workers.sh) it asks GET /livez on the container's loopback port.
# /livez fails only when the worker is hung (no answer) or has a fatal error;
# a worker that is loading its model or draining still answers 200, so
# neither is ever restarted. After WATCHDOG_FAILURES consecutive failures the
# container is restarted; if it fails as many times again after the restart,
# the instance reports itself Unhealthy to its Auto Scaling group, which
# replaces it (the termination hook still lets the other workers drain).
# Checks start WATCHDOG_GRACE_S after a container (re)started, the time the
# sidecar needs to listen. Counters live in $WATCHDOG_STATE_DIR.
#
# It runs from boot on: while start-workers.sh has not listed the workers
# (a step that hangs rather than fails), an instance still without them
# BOOT_HEALTHY_S (plus WATCHDOG_BOOT_SLACK_S) after boot reports itself
# Unhealthy as well.
set -euo pipefail

CONF=${ILLUSTRATOR_CONF:-/etc/illustrator}
# shellcheck source=/dev/null
. "$CONF/fleet.env"
INSTANCE_ID=""
if [ -e "$CONF/instance.env" ]; then
  # shellcheck source=/dev/null
  . "$CONF/instance.env"
fi
STATE=${WATCHDOG_STATE_DIR:-/run/illustrator-watchdog}
LIMIT=${WATCHDOG_FAILURES:-3}
GRACE_S=${WATCHDOG_GRACE_S:-180}
PROBE_TIMEOUT_S=${WATCHDOG_PROBE_TIMEOUT_S:-5}
BOOT_HEALTHY_S=${BOOT_HEALTHY_S:-900}
BOOT_SLACK_S=${WATCHDOG_BOOT_SLACK_S:-120}
IMDS=${IMDS:-http://169.254.169.254/latest}
mkdir -p "$STATE"

say() { echo "watchdog: $*" >&2; }

read_count() { cat "$STATE/$1" 2> /dev/null || echo 0; }

report_unhealthy() {
  if [ -e "$STATE/reported" ]; then return; fi
  if [ -z "$INSTANCE_ID" ]; then
    local token
    token=$(curl -sf -X PUT "$IMDS/api/token" -H "X-aws-ec2-metadata-token-ttl-seconds: 300") &&
      INSTANCE_ID=$(curl -sf -H "X-aws-ec2-metadata-token: $token" "$IMDS/meta-data/instance-id") ||
      return 0
  fi
  say "$1: marking $INSTANCE_ID Unhealthy"
  aws autoscaling set-instance-health --region "$AWS_REGION" \
    --instance-id "$INSTANCE_ID" --health-status Unhealthy --no-should-respect-grace-period
  touch "$STATE/reported"
}

check() {
  local name=$1 port=$2 started age failures
  started=$(docker inspect --format '{{.State.StartedAt}}' "$name" 2> /dev/null || echo "")
  if [ -n "$started" ]; then
    age=$(($(date +%s) - $(date -d "$started" +%s)))
    if [ "$age" -lt "$GRACE_S" ]; then return; fi
  fi
  if curl -sf --max-time "$PROBE_TIMEOUT_S" -o /dev/null "http://127.0.0.1:$port/livez"; then
    echo 0 > "$STATE/$name.failures"
    # A clean answer after the restart: the restart fixed it.
    rm -f "$STATE/$name.restarted"
    return
  fi
  failures=$(($(read_count "$name.failures") + 1))
  echo "$failures" > "$STATE/$name.failures"
  say "$name: /livez failed ($failures/$LIMIT)"
  if [ "$failures" -lt "$LIMIT" ]; then return; fi
  echo 0 > "$STATE/$name.failures"
  if [ -e "$STATE/$name.restarted" ]; then
    report_unhealthy "$name still fails after a restart"
  else
    say "$name: restarting"
    docker restart --time "$STOP_TIMEOUT" "$name" > /dev/null
    touch "$STATE/$name.restarted"
  fi
}

if [ ! -e "$CONF/workers" ]; then
  started=$(cat "$CONF/boot-started" 2> /dev/null || date +%s)
  if [ "$(date +%s)" -ge $((started + BOOT_HEALTHY_S + BOOT_SLACK_S)) ]; then
    report_unhealthy "no worker started ${BOOT_HEALTHY_S}s after boot"
  fi
  exit 0
fi

while read -r name port; do
  if [ -n "$name" ]; then check "$name" "$port"; fi
done < "$CONF/workers"
