import pytest
from django.test import override_settings

from saas.checks import check_broker_eviction_policy


def _settings_for(cache_server, broker_server):
    return override_settings(
        REDIS_HOST="127.0.0.1",
        REDIS_PORT=cache_server.port,
        REDIS_QUEUE_HOST="127.0.0.1",
        REDIS_QUEUE_PORT=broker_server.port,
        REDIS_QUEUE_URL=f"redis://127.0.0.1:{broker_server.port}/1",
    )


def test_broker_with_allkeys_lru_warns(make_redis_server):
    cache = make_redis_server()
    broker = make_redis_server(extra=["--maxmemory-policy", "allkeys-lru"])
    with _settings_for(cache, broker):
        messages = check_broker_eviction_policy()
    assert [m.id for m in messages] == ["saas.W001"]
    assert "allkeys-lru" in messages[0].msg


def test_shared_evicting_instance_is_an_error(make_redis_server):
    shared = make_redis_server(extra=["--maxmemory-policy", "volatile-lru"])
    with _settings_for(shared, shared):
        messages = check_broker_eviction_policy()
    assert [m.id for m in messages] == ["saas.E001"]


def test_noeviction_broker_passes(make_redis_server):
    cache = make_redis_server(extra=["--maxmemory-policy", "allkeys-lru"])
    broker = make_redis_server(extra=["--maxmemory-policy", "noeviction"])
    with _settings_for(cache, broker):
        assert check_broker_eviction_policy() == []


@pytest.mark.parametrize("policy", ["allkeys-lru"])
def test_check_runs_under_manage_py_check(make_redis_server, policy, subprocess_env):
    import subprocess
    import sys

    broker = make_redis_server(extra=["--maxmemory-policy", policy])
    env = {
        **subprocess_env,
        "REDIS_QUEUE_PORT": str(broker.port),
        "REDIS_QUEUE_DB": "1",
    }
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert "saas.W001" in result.stderr + result.stdout
