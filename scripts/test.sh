#!/usr/bin/env bash
# make test: the suite on PostgreSQL and Redis (DB numbers of its own).
set -euo pipefail
cd "$(dirname "$0")/.."

export DATABASE_URL="${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/salon}"
export REDIS_HOST="${REDIS_HOST:-127.0.0.1}" REDIS_PORT="${REDIS_PORT:-6379}"
export REDIS_DB="${REDIS_DB:-14}" REDIS_QUEUE_DB="${REDIS_QUEUE_DB:-15}"

if ! .venv/bin/python -c "import redis,sys; redis.Redis(host='$REDIS_HOST', port=$REDIS_PORT, socket_connect_timeout=1).ping()" 2>/dev/null; then
  echo "make test: no Redis at $REDIS_HOST:$REDIS_PORT (start one: redis-server --daemonize yes)" >&2
  exit 1
fi
if ! .venv/bin/python -c "import psycopg,sys; psycopg.connect('${DATABASE_URL%/*}/postgres', connect_timeout=2).close()" 2>/dev/null; then
  echo "make test: no PostgreSQL at ${DATABASE_URL%/*} (start it, or set DATABASE_URL)" >&2
  exit 1
fi

exec .venv/bin/python -m pytest "$@"
