"""The one Redis factory: plain host and port, or Sentinel; a connection to a
demoted primary is dropped, not kept (a read-only error means reconnect)."""

import pytest
import redis
from kombu import Connection

from saas.broker import broker_sentinel_options, broker_url
from saas.checks import _same_instance
from saas.redis import FailoverConnection, redis_client, sentinel_addresses
from tests.processes import sentinel_server
from tests.utils import wait_until


def point_queue_at(settings, port: int) -> None:
    settings.REDIS_QUEUE_HOST, settings.REDIS_QUEUE_PORT = "127.0.0.1", port
    settings.REDIS_QUEUE_URL = f"redis://127.0.0.1:{port}/0"
    settings.REDIS_QUEUE_SENTINELS = []


def test_a_client_whose_primary_is_demoted_reconnects(settings, make_redis_server):
    server, other = make_redis_server(), make_redis_server()
    point_queue_at(settings, server.port)
    client = redis_client("queue", socket_timeout=2)
    client.set("k", "1")
    first_connection = client.client_id()

    server.client().execute_command("REPLICAOF", "127.0.0.1", str(other.port))
    with pytest.raises(redis.ConnectionError, match="read-only replica"):
        client.set("k", "2")  # a ConnectionError: every caller retries or fails open
    server.client().execute_command("REPLICAOF", "NO", "ONE")

    client.set("k", "3")  # the same client, on a new connection
    assert client.client_id() != first_connection
    assert client.get("k") == b"3"


def test_the_broker_transport_drops_read_only_connections_too(settings):
    with Connection(broker_url()) as connection:
        assert connection.as_uri().startswith("redis://")  # Flower reads the scheme
        pool = connection.default_channel.pool
        assert issubclass(pool.connection_class, FailoverConnection)


def test_sentinel_settings_make_the_broker_url_and_options(settings):
    settings.REDIS_QUEUE_SENTINELS = ["10.0.0.1:26379", "10.0.0.2:26380"]
    settings.REDIS_QUEUE_SENTINEL_MASTER = "broker"
    settings.REDIS_QUEUE_PASSWORD = "pw"
    settings.REDIS_QUEUE_DB = 3
    assert broker_url() == (
        "sentinel://:pw@10.0.0.1:26379/3;sentinel://:pw@10.0.0.2:26380/3"
    )
    options = broker_sentinel_options(socket_timeout=2)
    assert options["master_name"] == "broker"
    assert options["sentinel_kwargs"]["socket_timeout"] == 2


def test_without_sentinels_the_broker_is_the_plain_url(settings):
    settings.REDIS_QUEUE_SENTINELS = []
    assert broker_url() == settings.REDIS_QUEUE_URL
    assert broker_sentinel_options() == {}


@pytest.mark.parametrize("bad", ["host", "host:", ":26379", "host:port"])
def test_a_malformed_sentinel_address_is_refused(bad):
    with pytest.raises(ValueError, match="host:port"):
        sentinel_addresses([bad])


def test_sentinel_clients_reach_the_master_the_sentinels_name(
    settings, make_redis_server, tmp_path
):
    primary = make_redis_server()
    sentinel = sentinel_server(masters={"grp": primary.port}, log_dir=tmp_path)
    try:
        wait_until(lambda: sentinel.master_address("grp") is not None, timeout=10)
        settings.REDIS_SENTINELS = [f"127.0.0.1:{sentinel.port}"]
        settings.REDIS_SENTINEL_MASTER = "grp"
        settings.REDIS_QUEUE_SENTINELS = [f"127.0.0.1:{sentinel.port}"]
        settings.REDIS_QUEUE_SENTINEL_MASTER = "grp"
        for role in ("cache", "queue"):
            client = redis_client(role, socket_timeout=2)
            assert client.info("server")["tcp_port"] == primary.port
        # Cache and broker in one group: the eviction check treats them as one.
        assert _same_instance()
        settings.REDIS_QUEUE_SENTINEL_MASTER = "broker"
        assert not _same_instance()
    finally:
        sentinel.stop()


def test_a_channel_closing_after_its_connection_is_a_connection_error():
    """kombu 5.7 exits a worker on None.hostname here; a connection error is
    one the consumer ignores while closing and recovers from."""
    with Connection(broker_url()) as connection:
        channel = connection.default_channel
        channel.connection.client = None  # what a released connection leaves
        with pytest.raises(redis.ConnectionError) as raised:
            channel._connparams()
        assert isinstance(raised.value, connection.connection_errors)
