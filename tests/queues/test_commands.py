"""The operators' management commands."""

import time
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from queues import records
from queues.definitions import EMAIL, WEBHOOK
from queues.models import QueueAction
from queues.selectors import job_detail, queue_stats

pytestmark = pytest.mark.django_db


def run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


def finished(job_id, state, age=0.0):
    records.record_transition(
        job_id=job_id,
        queue=WEBHOOK.name,
        state=state,
        fields={"id": job_id, "queue": WEBHOOK.name, "task": "queues.test_job"},
        now=time.time() - age,
    )


def test_queue_stats_lists_every_queue():
    finished("f1", "failed")
    out = run("queue_stats")
    lines = out.splitlines()
    assert lines[0].split() == [
        "queue",
        "waiting",
        "active",
        "delayed",
        "completed",
        "failed",
        "workers",
        "state",
    ]
    webhook = next(line for line in lines if line.startswith("whatsapp:webhook"))
    assert webhook.split() == [
        "whatsapp:webhook",
        "0",
        "0",
        "0",
        "0",
        "1",
        "0",
        "running",
    ]
    assert len(lines) == 7  # the header and six queues (issue 12 adds media)


def test_pause_and_resume_are_logged_with_the_command():
    assert "Paused notification:email" in run("queue_pause", "email")
    assert queue_stats(EMAIL)["paused"] is True
    assert "PAUSED" in run("queue_stats", "email")
    assert "Resumed notification:email" in run("queue_resume", "notification:email")
    assert queue_stats(EMAIL)["paused"] is False
    names = list(QueueAction.objects.values_list("actor_name", flat=True))
    assert (
        all(name.startswith("manage.py queue_") for name in names) and len(names) == 2
    )


def test_clean_dry_run_then_clean():
    finished("old", "completed", age=7200)
    finished("new", "completed")
    assert "Would remove 1 completed" in run(
        "queue_clean", "webhook", "--grace", "3600000", "--dry-run"
    )
    assert job_detail("old") is not None
    assert "Removed 1 completed" in run("queue_clean", "webhook", "--grace", "3600000")
    assert job_detail("old") is None and job_detail("new") is not None


def test_retry_failed():
    finished("f1", "failed")
    records.record_transition(
        job_id="f1",
        queue=WEBHOOK.name,
        state=None,
        fields={"args": "[]", "kwargs": "{}"},
    )
    assert "Would retry 1" in run("queue_retry_failed", "webhook", "--dry-run")
    assert "Retrying 1 failed" in run("queue_retry_failed", "webhook")
    assert queue_stats(WEBHOOK)["waiting"] == 1


@pytest.mark.parametrize(
    "args",
    [
        ("queue_pause", "nope"),
        ("queue_stats", "nope"),
        ("queue_clean", "webhook", "--grace", "-5"),
    ],
)
def test_bad_input_is_a_clear_error(args):
    with pytest.raises(CommandError):
        run(*args)
    assert QueueAction.objects.count() == 0
