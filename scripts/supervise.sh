#!/usr/bin/env bash
# Run a worker and start it again when it dies on its own, as a process
# supervisor would in production (compose: restart: unless-stopped). Needed
# because kombu 5.7's Redis transport can exit a worker holding unacknowledged
# jobs when the broker restarts; honcho would otherwise stop the whole product.
# A TERM or INT (Ctrl-C) stops the worker and this loop.
set -u
stopping=0
child=0
trap 'stopping=1; [ "$child" -gt 0 ] && kill -TERM "$child" 2>/dev/null' TERM INT
while :; do
  "$@" &
  child=$!
  status=0
  while kill -0 "$child" 2>/dev/null; do
    wait "$child"
    status=$?
  done
  [ "$stopping" = 1 ] && exit "$status"
  echo "supervise: '$*' exited with status $status; starting it again in 2 s" >&2
  sleep 2
  [ "$stopping" = 1 ] && exit "$status"
done
