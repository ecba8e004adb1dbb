"""GET /admin/queue/health and /metrics: dependencies, workers, alerts."""

import time

import pytest
from django.test import override_settings

from queues import records
from queues.definitions import QUEUES, WEBHOOK
from queues.keys import PRIORITY_SEP, backlog_key
from saas.redis import queue_redis
from tests.processes import free_port
from tests.utils import broker_at, wait_until

ALL_QUEUES = [spec.name for spec in QUEUES]


def health(client):
    response = client.get("/admin/queue/health")
    return response.status_code, response.json()


def alerts(body):
    return {(a["alert"], a["target"]) for a in body["alerts"]}


@pytest.fixture(autouse=True)
def _fresh_queue_client():
    yield
    queue_redis.cache_clear()


@pytest.mark.django_db(transaction=True)
def test_ok_with_workers_and_degraded_when_a_worker_stops(staff_client, start_worker):
    start_worker(ALL_QUEUES, name="all-a")
    emailer = start_worker(["notification:email"], name="email-b")
    wait_until(lambda: health(staff_client)[1]["status"] == "ok", timeout=15)
    code, body = health(staff_client)
    assert code == 200 and body["alerts"] == []
    assert body["database"]["status"] == "ok"
    assert body["broker"]["maxmemory_policy"] == "noeviction"
    assert len(body["queues"]["notification:email"]["workers"]) == 2

    emailer.stop()
    code, body = health(staff_client)
    assert code == 200 and body["status"] == "ok"  # one email worker is left
    assert len(body["queues"]["notification:email"]["workers"]) == 1


@pytest.mark.django_db(transaction=True)
def test_queue_without_worker_degrades(staff_client, start_worker):
    worker = start_worker(ALL_QUEUES, name="only")
    wait_until(lambda: health(staff_client)[1]["status"] == "ok", timeout=15)
    worker.stop()
    code, body = health(staff_client)
    assert code == 200 and body["status"] == "degraded"
    assert {("no_worker", q) for q in ALL_QUEUES} <= alerts(body)


@pytest.mark.django_db
def test_evicting_broker_degrades(staff_client, make_redis_server):
    broker = make_redis_server(extra=["--maxmemory-policy", "allkeys-lru"])
    with broker_at(broker.port):
        code, body = health(staff_client)
    assert code == 200 and body["status"] == "degraded"
    assert ("broker_evicts", "broker") in alerts(body)
    assert body["broker"]["maxmemory_policy"] == "allkeys-lru"


@pytest.mark.django_db
def test_broker_memory_over_80_percent_alerts(staff_client, make_redis_server):
    broker = make_redis_server(
        extra=["--maxmemory", "4mb", "--maxmemory-policy", "noeviction"]
    )
    client = broker.client(db=1)
    blob = "x" * 100_000
    while True:
        info = client.info("memory")
        if info["used_memory"] > 0.85 * info["maxmemory"]:
            break
        client.set(f"blob:{client.dbsize()}", blob)
    with broker_at(broker.port):
        code, body = health(staff_client)
    assert ("redis_memory", "broker") in alerts(body)
    assert body["broker"]["memory_ratio"] > 0.8


@pytest.mark.django_db
def test_broker_down_is_503(staff_client):
    with override_settings(REDIS_QUEUE_URL=f"redis://127.0.0.1:{free_port()}/1"):
        queue_redis.cache_clear()
        code, body = health(staff_client)
    assert code == 503
    assert body["status"] == "down" and body["broker"]["status"] == "down"
    assert ("redis_unreachable", "broker") in alerts(body)


@pytest.mark.django_db
def test_cache_down_degrades_but_answers(staff_client):
    with override_settings(REDIS_CACHE_URL=f"redis://127.0.0.1:{free_port()}/1"):
        code, body = health(staff_client)
    assert code == 200 and body["status"] == "degraded"
    assert ("redis_unreachable", "cache") in alerts(body)


@pytest.mark.django_db
def test_failure_rate_over_5_percent_alerts(staff_client):
    now = time.time()
    for n in range(19):
        records.record_transition(
            job_id=f"c{n}", queue=WEBHOOK.name, state="completed", now=now
        )
    records.record_transition(job_id="f", queue=WEBHOOK.name, state="failed", now=now)
    _, body = health(staff_client)
    assert ("failure_rate", WEBHOOK.name) not in alerts(body)  # 5% is not over
    records.record_transition(job_id="f2", queue=WEBHOOK.name, state="failed", now=now)
    _, body = health(staff_client)
    assert ("failure_rate", WEBHOOK.name) in alerts(body)
    assert body["queues"][WEBHOOK.name]["failure_rate_1h"] == round(2 / 21, 4)


@pytest.mark.django_db
def test_backlog_over_1000_for_five_minutes_alerts(staff_client):
    client = queue_redis()
    client.lpush(f"{WEBHOOK.name}{PRIORITY_SEP}5", *range(1001))
    _, body = health(staff_client)
    assert ("backlog", WEBHOOK.name) not in alerts(body)  # not for 5 min yet
    client.set(backlog_key(WEBHOOK.name), repr(time.time() - 301))
    _, body = health(staff_client)
    assert ("backlog", WEBHOOK.name) in alerts(body)
    client.ltrim(f"{WEBHOOK.name}{PRIORITY_SEP}5", 0, 9)  # drained below 1000
    _, body = health(staff_client)
    assert ("backlog", WEBHOOK.name) not in alerts(body)
    assert client.get(backlog_key(WEBHOOK.name)) is None


@pytest.mark.django_db
def test_metrics_in_prometheus_text(client, staff_client):
    from prometheus_client.parser import text_string_to_metric_families

    queue_redis().lpush(f"{WEBHOOK.name}{PRIORITY_SEP}5", "a", "b")
    records.record_transition(
        job_id="c1", queue=WEBHOOK.name, state="completed", duration=0.3
    )
    records.record_transition(
        job_id="f1", queue=WEBHOOK.name, state="failed", duration=0.004
    )
    response = client.get("/metrics")
    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/plain")
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.content.decode())
        for s in family.samples
    }
    jobs = "queue_jobs"
    webhook = ("queue", WEBHOOK.name)
    assert samples[(jobs, (webhook, ("state", "waiting")))] == 2
    assert samples[(jobs, (webhook, ("state", "completed")))] == 1
    assert samples[(jobs, (webhook, ("state", "failed")))] == 1
    duration = "queue_job_duration_seconds"
    assert samples[(f"{duration}_bucket", (("le", "0.005"), webhook))] == 1
    assert samples[(f"{duration}_bucket", (("le", "0.5"), webhook))] == 2
    assert samples[(f"{duration}_count", (webhook,))] == 2
    assert samples[(f"{duration}_sum", (webhook,))] == pytest.approx(0.304)
    assert (
        samples[("queue_alert", (("alert", "no_worker"), ("target", WEBHOOK.name)))]
        == 1
    )
    assert (
        samples[("queue_alert", (("alert", "broker_evicts"), ("target", "broker")))]
        == 0
    )


@pytest.mark.django_db
def test_metrics_carry_cache_counters_when_saas_cache_is_installed(client):
    cache = pytest.importorskip("saas.cache")
    from prometheus_client.parser import text_string_to_metric_families

    body = client.get("/metrics").content.decode()
    families = {f.name: f for f in text_string_to_metric_families(body)}
    assert "cache_hits" in families and "cache_misses" in families
    expected = cache.cache_stats()
    seen = {s.labels["namespace"] for s in families["cache_hits"].samples}
    assert seen == set(expected)
