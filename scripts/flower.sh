#!/usr/bin/env bash
# Flower is never started without authentication.
set -euo pipefail
if [ -z "${FLOWER_BASIC_AUTH:-}" ]; then
  echo "flower: FLOWER_BASIC_AUTH (user:password) is not set; refusing to start Flower without auth" >&2
  exit 1
fi
mkdir -p var
exec .venv/bin/celery -A saas flower \
  --address=127.0.0.1 --port="${FLOWER_PORT:-5555}" \
  --basic-auth="$FLOWER_BASIC_AUTH" \
  --persistent=True --db="${FLOWER_DB:-var/flower.db}" --max_tasks=50000 \
  --url_prefix="${FLOWER_URL_PREFIX:-}"
