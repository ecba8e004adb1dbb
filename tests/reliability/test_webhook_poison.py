"""A body that kills the worker process (not an exception: ``os._exit``, as an
out-of-memory kill would) cannot stall the drain: it is quarantined after a
few claims, shown on the queue page with its reason and re-drivable, and
every other event of its batch is processed once.

The worker runs with the test-only ``WEBHOOK_TEST_CRASH_MARKER`` (see
messaging/inbox_claims.py): a body containing the marker makes it exit hard."""

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from messaging import inbox
from messaging.models import Message, WebhookEvent
from queues.keys import WEBHOOK_CLAIMS_KEY
from saas.redis import queue_redis
from tests.messaging.conftest import text_body
from tests.utils import wait_until

pytestmark = [
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.timeout(400),
]

MARKER = "POISON-BODY-17"
EVENTS = 40


def body(wamid: str, text: str = "hello") -> str:
    import json

    return json.dumps(text_body(wamid, wa_id=f"1650555{len(wamid) % 7:04d}", text=text))


def test_a_body_that_kills_the_worker_is_quarantined_and_the_rest_go_through(
    salon, start_worker, staff_user
):
    # Stored before any worker runs, so they are claimed in one batch with the
    # poison in its middle.
    for n in range(EVENTS):
        if n == EVENTS // 2:
            poison = inbox.webhook_event_receive(body=body("wamid.POISON", MARKER))
        else:
            inbox.webhook_event_receive(body=body(f"wamid.OK{n:03d}"))
    worker = start_worker(
        "whatsapp:webhook",
        concurrency=1,
        env={"WEBHOOK_TEST_CRASH_MARKER": MARKER},
    )

    def settled() -> bool:
        poison.refresh_from_db()
        return (
            poison.status == WebhookEvent.Status.QUARANTINED
            and WebhookEvent.objects.filter(status="processed").count() == EVENTS - 1
        )

    wait_until(settled, timeout=300, interval=0.2, message="poison quarantined")
    log = worker.log()
    crashes = log.count("Test crash marker found")
    assert crashes == settings.WHATSAPP_WEBHOOK_MAX_CLAIMS, log[-3000:]
    assert f"claimed by {settings.WHATSAPP_WEBHOOK_MAX_CLAIMS} drains" in (
        poison.last_error
    )
    ok = {f"wamid.OK{n:03d}" for n in range(EVENTS) if n != EVENTS // 2}
    assert set(Message.objects.values_list("wamid", flat=True)) == ok
    # Every other event applied exactly once, none of them quarantined.
    assert set(
        WebhookEvent.objects.exclude(pk=poison.pk).values_list("attempts", flat=True)
    ) == {1}
    assert not queue_redis().hexists(WEBHOOK_CLAIMS_KEY, poison.pk)

    worker.stop()
    # The queue page lists it with its reason; an operator re-drives it.
    client = Client()
    client.force_login(staff_user)
    page = client.get(reverse("admin:queues-queue", args=["webhook"]))
    assert page.status_code == 200
    assert f'data-event="{poison.pk}"' in page.content.decode()
    claims = settings.WHATSAPP_WEBHOOK_MAX_CLAIMS
    assert f"claimed by {claims} drains that never finished it" in page.content.decode()
    answer = client.post(
        reverse("admin:queues-webhook-event-release", args=[poison.pk])
    )
    assert answer.status_code == 302
    poison.refresh_from_db()
    assert poison.status == WebhookEvent.Status.PENDING
    page = client.get(reverse("admin:queues-queue", args=["webhook"]))
    assert f'data-event="{poison.pk}"' not in page.content.decode()
