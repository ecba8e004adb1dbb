import os
from urllib.parse import quote

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from tests.factories import (
    BookingFactory,
    MessageFactory,
    SalonFactory,
    TemplateFactory,
    UserFactory,
)
from tests.processes import CeleryWorker, celery_worker_args, redis_server

DEV_REDIS_DBS = {0, 1}


def _guarded_flush(url: str, db: int) -> None:
    if db in DEV_REDIS_DBS and not os.environ.get("ALLOW_FLUSH_DEV_REDIS"):
        raise RuntimeError(
            f"Refusing to flush Redis DB {db}: tests use their own DB numbers "
            "(REDIS_DB/REDIS_QUEUE_DB, 14 and 15 by default)."
        )
    redis.Redis.from_url(url).flushdb()


@pytest.fixture(autouse=True)
def _clean_redis():
    """Every test starts with an empty cache and broker DB of its own."""
    _guarded_flush(settings.REDIS_CACHE_URL, settings.REDIS_DB)
    _guarded_flush(settings.REDIS_QUEUE_URL, settings.REDIS_QUEUE_DB)
    from saas.redis import queue_redis

    queue_redis.cache_clear()
    from saas.cache import cache_service

    cache_service.reset_state()
    yield


@pytest.fixture
def victim(other_user):
    """Tenant B's objects, which tenant A must never see or touch."""
    salon = SalonFactory(owner=other_user)
    message = MessageFactory(conversation__salon=salon)
    return {
        "salon": salon,
        "booking": BookingFactory(salon=salon),
        "conversation": message.conversation,
        "message": message,
        "template": TemplateFactory(salon=salon),
    }


@pytest.fixture
def api_client() -> APIClient:
    return APIClient()


@pytest.fixture
def user(db):
    return UserFactory()


@pytest.fixture
def other_user(db):
    return UserFactory()


@pytest.fixture
def staff_user(db):
    return UserFactory(is_staff=True, is_superuser=True)


def client_for(user) -> APIClient:
    client = APIClient()
    client.credentials(
        HTTP_AUTHORIZATION=f"Bearer {RefreshToken.for_user(user).access_token}"
    )
    return client


@pytest.fixture
def auth_client(user) -> APIClient:
    return client_for(user)


@pytest.fixture
def other_client(other_user) -> APIClient:
    return client_for(other_user)


@pytest.fixture
def staff_client(staff_user) -> APIClient:
    return client_for(staff_user)


def test_database_url() -> str:
    """The URL of the database pytest-django created, for subprocesses."""
    from django.db import connection

    params = connection.settings_dict
    user = quote(params.get("USER") or "")
    password = f":{quote(params['PASSWORD'])}" if params.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = params.get("HOST") or "127.0.0.1"
    port = params.get("PORT") or 5432
    return f"postgres://{auth}{host}:{port}/{params['NAME']}"


@pytest.fixture
def subprocess_env(transactional_db) -> dict[str, str]:
    """Environment for real processes (workers, servers) that share the test DB."""
    env = dict(os.environ)
    env["DATABASE_URL"] = test_database_url()
    env["CONN_MAX_AGE"] = "0"
    env["PYTHONUNBUFFERED"] = "1"
    env["LOG_LEVEL"] = "INFO"  # the worker fixture waits for its "ready." line
    return env


@pytest.fixture
def start_worker(subprocess_env, tmp_path):
    """Start real Celery workers on the test broker; all stopped at teardown."""
    started: list[CeleryWorker] = []

    def start(
        queues,
        *,
        name: str | None = None,
        concurrency: int = 1,
        pool: str = "prefork",
        env=None,
        wait=True,
    ):
        queues = [queues] if isinstance(queues, str) else list(queues)
        name = name or f"w{len(started)}-" + "-".join(
            q.replace(":", "_") for q in queues
        )
        worker = CeleryWorker(
            name=name,
            args=celery_worker_args(
                queues, name=name, concurrency=concurrency, pool=pool
            ),
            env={**subprocess_env, **(env or {})},
            log_path=tmp_path / f"{name}.log",
            queues=queues,
        )
        worker.start()
        started.append(worker)
        return worker.wait_ready() if wait else worker

    yield start
    for worker in started:
        worker.stop()


@pytest.fixture
def make_redis_server(tmp_path):
    """Throwaway redis-servers on free ports, stopped at teardown."""
    servers = []

    def make(**kwargs):
        server = redis_server(log_dir=tmp_path, **kwargs)
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp_server():
    """A real SMTP server (aiosmtpd) on a free port; workers get its EMAIL_URL."""
    from tests.smtp import SMTPServer

    server = SMTPServer().start()
    yield server
    server.stop()
