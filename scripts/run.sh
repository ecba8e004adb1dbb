#!/usr/bin/env bash
# make run: the whole product in one foreground process group (Ctrl-C stops all).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p var

# Development secrets, generated once and kept in var/dev.env; the environment
# wins over the file.
if [ ! -f var/dev.env ]; then
  gen() { .venv/bin/python -c 'import secrets; print(secrets.token_urlsafe(32))'; }
  cat > var/dev.env <<ENV
DEBUG=true
SECRET_KEY=$(gen)
JWT_SIGNING_KEY=$(gen)
WHATSAPP_APP_SECRET=$(gen)
WHATSAPP_VERIFY_TOKEN=$(gen)
FLOWER_BASIC_AUTH=admin:$(gen)
ENV
fi
while IFS='=' read -r key value; do
  [ -n "$key" ] && [ -z "${!key:-}" ] && export "$key=$value"
done < var/dev.env

REDIS_HOST="${REDIS_HOST:-127.0.0.1}"
REDIS_PORT="${REDIS_PORT:-6379}"
redis_up() {
  .venv/bin/python -c "import redis; redis.Redis(host='$REDIS_HOST', port=$REDIS_PORT, password='${REDIS_PASSWORD:-}' or None, socket_connect_timeout=1).ping()" 2>/dev/null
}
if ! redis_up; then
  if command -v redis-server >/dev/null && [[ "$REDIS_HOST" =~ ^(127\.0\.0\.1|localhost)$ ]]; then
    echo "run: no Redis at $REDIS_HOST:$REDIS_PORT; starting one under var/redis"
    mkdir -p var/redis
    redis-server --daemonize yes --bind 127.0.0.1 --port "$REDIS_PORT" \
      --dir "$PWD/var/redis" --pidfile "$PWD/var/redis/redis.pid" \
      --logfile "$PWD/var/redis/redis.log" --save "" --appendonly no \
      --maxmemory-policy noeviction
    trap 'kill "$(cat var/redis/redis.pid)" 2>/dev/null || true' EXIT
    for _ in $(seq 1 50); do redis_up && break; sleep 0.1; done
  else
    echo "run: no Redis at $REDIS_HOST:$REDIS_PORT. Install it (apt install redis-server, brew install redis) or set REDIS_HOST/REDIS_PORT." >&2
    exit 1
  fi
fi

.venv/bin/python manage.py migrate --no-input -v0
.venv/bin/python manage.py seed_demo

echo "run: web http://127.0.0.1:${WEB_PORT:-8000}/ (admin /admin/, API docs /api/docs/, queues /admin/queues/)"
echo "run: Flower http://127.0.0.1:${FLOWER_PORT:-5555}/ (user:password ${FLOWER_BASIC_AUTH})"
.venv/bin/honcho start -f Procfile
