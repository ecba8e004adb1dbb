"""Settings for many machines: Sentinel for the cache and the broker, and
PgBouncer's transaction pooling, all from the environment."""

import json
import subprocess
import sys

import pytest

from tests.conftest import test_database_url as database_url
from tests.processes import ROOT
from tests.saas.test_settings import BASE_ENV

SHOW = """
import json, django
django.setup()
from django.conf import settings
from django.db import connection
from saas.celery import app
for _ in range(8):  # past psycopg's prepare threshold
    with connection.cursor() as cursor:
        cursor.execute("SELECT %s", [1])
print(json.dumps({
    "cache": settings.CACHES["default"],
    "broker_url": app.conf.broker_url,
    "master_name": app.conf.broker_transport_options.get("master_name"),
    "db": {k: settings.DATABASES["default"].get(k) for k in
           ("DISABLE_SERVER_SIDE_CURSORS", "OPTIONS")},
}, default=str))
"""

pytestmark = pytest.mark.django_db


def show(**env: str) -> dict:
    result = subprocess.run(
        [sys.executable, "-c", SHOW],
        env={
            **BASE_ENV,
            "DJANGO_SETTINGS_MODULE": "saas.settings",
            "DATABASE_URL": database_url(),
            **env,
        },
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_sentinel_variables_switch_the_cache_and_the_broker():
    shown = show(
        REDIS_SENTINELS="s1:26379,s2:26379,s3:26379",
        REDIS_SENTINEL_MASTER="cache",
        REDIS_QUEUE_SENTINEL_MASTER="broker",
        REDIS_PASSWORD="pw",
        REDIS_DB="4",
        REDIS_QUEUE_DB="5",
    )
    options = shown["cache"]["OPTIONS"]
    assert options["CLIENT_CLASS"] == "django_redis.client.SentinelClient"
    assert (
        options["CONNECTION_FACTORY"] == "django_redis.pool.SentinelConnectionFactory"
    )
    assert options["SENTINELS"] == [["s1", 26379], ["s2", 26379], ["s3", 26379]]
    # The master only, reads too: a replica may lag an invalidation.
    assert shown["cache"]["LOCATION"] == ["redis://:pw@cache:6379/4"]
    # The broker's sentinels default to the cache's, its master is its own.
    assert shown["broker_url"] == (
        "sentinel://:pw@s1:26379/5;sentinel://:pw@s2:26379/5;sentinel://:pw@s3:26379/5"
    )
    assert shown["master_name"] == "broker"


def test_without_sentinels_everything_is_as_before():
    shown = show(REDIS_HOST="10.1.1.1", REDIS_PORT="6390", REDIS_DB="4")
    assert shown["cache"]["LOCATION"] == "redis://10.1.1.1:6390/4"
    assert shown["cache"]["OPTIONS"]["CLIENT_CLASS"] == (
        "django_redis.client.DefaultClient"
    )
    assert shown["broker_url"].startswith("redis://10.1.1.1:6390/")
    assert shown["master_name"] is None
    assert shown["db"]["DISABLE_SERVER_SIDE_CURSORS"] is None


def test_pgbouncer_transaction_pooling_turns_off_session_features():
    shown = show(PGBOUNCER_TRANSACTION_POOLING="true")
    assert shown["db"]["DISABLE_SERVER_SIDE_CURSORS"] is True
    assert shown["db"]["OPTIONS"]["prepare_threshold"] is None
