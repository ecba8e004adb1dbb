"""Every worker command line is built from QueueSpec in one place
(queues/workers.py), and everything that starts workers goes through it."""

import re

from queues.definitions import EMAIL, OUTBOUND, QUEUES, WEBHOOK
from queues.workers import worker_argv
from tests.processes import ROOT


def option(argv: list[str], flag: str) -> str:
    return argv[argv.index(flag) + 1]


def test_a_worker_takes_its_queue_name_and_concurrency_from_queuespec(settings):
    settings.WEBHOOK_QUEUE_CONCURRENCY = 7
    argv = worker_argv(["webhook"])
    assert argv[1:6] == ["-m", "celery", "-A", "saas", "worker"]
    assert option(argv, "-Q") == WEBHOOK.name
    assert option(argv, "-c") == "7"
    assert option(argv, "-n") == "webhook@%h"
    assert option(argv, "-P") == "threads"


def test_one_worker_can_serve_several_queues(monkeypatch):
    monkeypatch.setenv("CELERY_POOL", "prefork")
    argv = worker_argv([EMAIL.name, "outbound"], concurrency=2)
    assert option(argv, "-Q") == f"{EMAIL.name},{OUTBOUND.name}"
    assert option(argv, "-n") == "email-outbound@%h"
    assert (option(argv, "-c"), option(argv, "-P")) == ("2", "prefork")


def test_procfile_and_compose_start_every_queue_through_queue_worker():
    for path in (
        "Procfile",
        "docker/docker-compose.yml",
        "docker/docker-compose.prod.yml",
    ):
        text = (ROOT / path).read_text()
        assert "celery -A saas worker" not in text, path
        served = {
            alias
            for line in re.findall(r"manage\.py queue_worker ([\w ,-]+)", text)
            for alias in line.split()
        }
        assert served == {spec.alias for spec in QUEUES}, path
