"""Stop the broker's Redis, post 200 webhooks: all answered 200, all processed
after the broker is back and beat has re-driven them; 0 lost.

The webhook worker is stopped for the outage: a running drain job keeps
processing events without the broker (the database holds them), which would
leave nothing for the re-drive to prove."""

import sys

import httpx
import pytest
from django_celery_beat.models import IntervalSchedule, PeriodicTask

from messaging.models import Message, WebhookEvent
from tests.messaging.conftest import sign, text_body
from tests.processes import ManagedProcess, celery_beat_args, free_port
from tests.utils import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

POSTS = 200


def processed() -> int:
    return WebhookEvent.objects.filter(status=WebhookEvent.Status.PROCESSED).count()


@pytest.fixture
def processes():
    started: list[ManagedProcess] = []

    def start(process: ManagedProcess) -> ManagedProcess:
        started.append(process.start())
        return process

    yield start
    for process in started:
        process.stop()


def post(http: httpx.Client, body: dict) -> int:
    import json

    raw = json.dumps(body).encode()
    return http.post(
        "/webhooks/whatsapp/",
        content=raw,
        headers={"X-Hub-Signature-256": sign(raw), "Content-Type": "application/json"},
    ).status_code


def test_webhooks_survive_a_broker_outage(
    salon, subprocess_env, start_worker, make_redis_server, processes, tmp_path
):
    broker = make_redis_server()
    env = {
        **subprocess_env,
        "REDIS_QUEUE_HOST": "127.0.0.1",
        "REDIS_QUEUE_PORT": str(broker.port),
        "WHATSAPP_WEBHOOK_REDRIVE_AFTER_SECONDS": "2",
    }
    port = free_port()
    web = processes(
        ManagedProcess(
            name="web",
            args=[
                sys.executable,
                "-m",
                "gunicorn",
                "saas.wsgi",
                "--bind",
                f"127.0.0.1:{port}",
                "--workers",
                "1",
                "--threads",
                "4",
            ],
            env=env,
            log_path=tmp_path / "web.log",
        )
    )
    http = httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10)

    def web_up():
        assert web.alive, web.log()[-3000:]
        try:
            return http.get("/healthz").status_code == 200
        except httpx.TransportError:
            return False

    wait_until(web_up, timeout=30, message="gunicorn up")
    worker = start_worker("whatsapp:webhook", concurrency=2, env=env)

    # The pipeline works on this broker before the outage.
    assert post(http, text_body("wamid.BEFORE")) == 200
    wait_until(lambda: processed() == 1, timeout=30, message="control event")

    worker.stop()
    broker.stop()
    answers = [
        post(http, text_body(f"wamid.OUTAGE{n:04d}", wa_id=f"1650555{n % 20:04d}"))
        for n in range(POSTS)
    ]
    assert answers == [200] * POSTS
    assert WebhookEvent.objects.filter(status="pending").count() == POSTS
    assert "not enqueued" in web.log()

    restarted = make_redis_server(port=broker.port)
    assert restarted.client(db=int(env["REDIS_QUEUE_DB"])).dbsize() == 0  # nothing kept
    start_worker("whatsapp:webhook", concurrency=2, env=env)
    every_second, _ = IntervalSchedule.objects.get_or_create(every=1, period="seconds")
    PeriodicTask.objects.update_or_create(
        name="whatsapp: re-drive pending webhook events",
        defaults={"task": "messaging.webhook_events_redrive", "interval": every_second},
    )
    processes(
        ManagedProcess(
            name="beat",
            args=celery_beat_args(),
            env=env,
            log_path=tmp_path / "beat.log",
        )
    )
    wait_until(lambda: processed() == POSTS + 1, timeout=180, message="all re-driven")

    assert Message.objects.count() == POSTS + 1
    expected = {f"wamid.OUTAGE{n:04d}" for n in range(POSTS)} | {"wamid.BEFORE"}
    assert set(Message.objects.values_list("wamid", flat=True)) == expected
    assert set(WebhookEvent.objects.values_list("attempts", flat=True)) == {1}
