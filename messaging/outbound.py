"""Outbound messages: a staff member's reply queued and sent on
whatsapp:outbound, and the messages other apps send themselves (reminders)
recorded in their conversation."""

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from bookings.models import Salon
from messaging.governed_sending import GovernedSend, governed_send, salon_rate
from messaging.models import Conversation, Message
from messaging.selectors import window_is_open
from messaging.send_errors import send_error_annotate
from messaging.services import (
    conversations_touch,
    messages_changed_on_commit,
    orphan_statuses_adopt,
    wa_id_from_phone,
)
from messaging.whatsapp import SendResult, WhatsAppError, whatsapp_client
from queues.definitions import OUTBOUND, RetryableJobError
from queues.publish import job_publish
from saas.services import rows_claim_for_redrive

logger = logging.getLogger(__name__)

#: The job of whatsapp:outbound (messaging/tasks.py), published by name.
MESSAGE_OUTBOUND_SEND_TASK = "messaging.message_outbound_send"
MESSAGE_TEST_SEND_TASK = "messaging.message_test_send"

WINDOW_CLOSED = (
    "The customer has not written in the last 24 hours, so WhatsApp only "
    "accepts an approved template message now: use a template."
)


@transaction.atomic
def message_send_text(*, conversation: Conversation, text: str) -> Message:
    """Queue a staff member's free-text reply; sent on whatsapp:outbound."""
    text = text.strip()
    if not text:
        raise ValidationError({"text": "The message is empty."})
    now = timezone.now()
    if not window_is_open(conversation.last_inbound_at, now=now):
        raise ValidationError({"text": WINDOW_CLOSED})
    message = Message.objects.create(
        salon_id=conversation.salon_id,
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        type="text",
        body=text,
        status=Message.Status.QUEUED,
        created_at=now,
    )
    conversations_touch({conversation.pk: now}, inbound=False)
    messages_changed_on_commit(conversation.salon_id, [conversation.pk])
    transaction.on_commit(lambda: _outbound_publish(message.pk))
    return message


def message_outbound_record(
    *,
    salon: Salon,
    customer_wa_id: str,
    customer_name: str,
    wamid: str | None,
    type: str,
    body: str,
    content: dict[str, Any],
    at: datetime,
) -> Message:
    """Record a message another app has sent (a booking reminder) as sent, in
    the caller's transaction: the customer's conversation moves to ``at``, or
    is made on first contact under ``customer_name``."""
    conversation = _conversation_touch_or_create(
        salon, wa_id=customer_wa_id, customer_name=customer_name, at=at
    )
    message = Message.objects.create(
        salon=salon,
        conversation=conversation,
        wamid=wamid,
        direction=Message.Direction.OUTBOUND,
        type=type,
        body=body,
        content=content,
        status=Message.Status.SENT,
        sent_at=at,
        created_at=at,
    )
    messages_changed_on_commit(salon.pk, [conversation.pk])
    return message


def message_send_error_record(
    *,
    salon: Salon,
    customer_wa_id: str,
    customer_name: str,
    type: str,
    body: str,
    content: dict[str, Any],
    error: dict[str, Any],
    at: datetime,
) -> Message:
    """Record a message another app tried to send and Meta refused (a
    reminder), as a failed message carrying Meta's error, in the caller's
    transaction: the error is shown on the message and counted per salon."""
    conversation = _conversation_touch_or_create(
        salon, wa_id=customer_wa_id, customer_name=customer_name, at=at
    )
    message = Message.objects.create(
        salon=salon,
        conversation=conversation,
        direction=Message.Direction.OUTBOUND,
        type=type,
        body=body,
        content=content,
        status=Message.Status.FAILED,
        error=send_error_annotate(error),
        failed_at=at,
        created_at=at,
    )
    messages_changed_on_commit(salon.pk, [conversation.pk])
    return message


def _conversation_touch_or_create(
    salon: Salon, *, wa_id: str, customer_name: str, at: datetime
) -> Conversation:
    touched = Conversation.objects.filter(salon=salon, customer_wa_id=wa_id)
    if touched.update(last_message_at=at):
        return touched.get()
    new = Conversation(
        salon=salon,
        customer_wa_id=wa_id,
        customer_name=customer_name,
        last_message_at=at,
    )
    Conversation.objects.bulk_create([new], ignore_conflicts=True)
    # Lost a race with an inbound message's insert: take the row it made.
    conversation = touched.get()
    if conversation.pk != new.pk:
        touched.update(last_message_at=at)
    return conversation


def _outbound_publish(message_id) -> None:
    """Publish the message's send job; in a broker outage the message stays
    queued until beat re-drives it."""
    job_publish(
        MESSAGE_OUTBOUND_SEND_TASK,
        queue=OUTBOUND,
        durable=f"Outbound message {message_id}",
        kwargs={"message_id": str(message_id)},
    )


def messages_outbound_redrive(*, older_than: timedelta, limit: int = 500) -> list:
    """Enqueue again the outbound messages still queued ``older_than`` after
    they were written and not re-driven within that time (their enqueue
    failed, or their job was lost). A job that was only late finds its
    message sent and does nothing; one still waiting in a backlog longer than
    ``older_than`` can send twice, which is why the threshold is minutes."""
    ids = [
        message.pk
        for message in rows_claim_for_redrive(
            Message.objects.filter(
                direction=Message.Direction.OUTBOUND,
                status=Message.Status.QUEUED,
                wamid__isnull=True,
            ).only("pk"),
            stale_field="created_at",
            older_than=older_than,
            order_by="created_at",
            limit=limit,
        )
    ]
    for message_id in ids:
        _outbound_publish(message_id)
    if ids:
        logger.warning("Re-drove %d queued outbound messages", len(ids))
    return ids


def _outbound_send(message: Message) -> SendResult:
    """The send, through the throughput governor (SendDeferred when it must
    wait)."""
    client = whatsapp_client()
    phone_number_id = message.salon.whatsapp_phone_number_id
    # The phone number when we know it (Meta recommends it), else the BSUID.
    conversation = message.conversation
    to = conversation.customer_wa_id or conversation.customer_user_id
    if message.type == "template":

        def call() -> SendResult:
            return client.send_template(
                phone_number_id=phone_number_id,
                to=to,
                name=message.content["name"],
                language=message.content.get("language", message.salon.language),
                parameters=message.content.get("parameters", []),
            )

    else:
        reply_to = message.reply_to.wamid if message.reply_to else ""

        def call() -> SendResult:
            return client.send_text(
                phone_number_id=phone_number_id,
                to=to,
                body=message.body,
                reply_to_wamid=reply_to or "",
            )

    return governed_send(
        GovernedSend(
            phone_number_id=phone_number_id,
            recipient=to,
            rate=salon_rate(message.salon),
            call=call,
            key=message.pk,
        )
    )


def message_outbound_deliver(*, message_id, final_attempt: bool) -> Message | None:
    """Send a queued outbound message through the WhatsApp client.

    Retryable errors (by Meta's code) raise RetryableJobError until the last
    attempt; permanent ones, and the last attempt's, fail the message with
    the error. A send the throughput governor defers (no token, or Meta
    answered 130429/131056) raises SendDeferred: no attempt is spent.
    """
    message = (
        Message.objects.select_related("salon", "conversation", "reply_to")
        .filter(pk=message_id)
        .first()
    )
    if message is None:
        logger.warning("Outbound message %s is gone; nothing to send", message_id)
        return None
    if message.status != Message.Status.QUEUED or message.wamid:
        return message  # sent already (a redelivered job)
    try:
        result = _outbound_send(message)
    except WhatsAppError as exc:
        if exc.retryable and not final_attempt:
            raise RetryableJobError(f"message {message_id}: {exc}") from exc
        return _message_fail(message, exc.as_dict())
    with transaction.atomic():
        Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
            wamid=result.wamid, status=Message.Status.SENT
        )
        message.refresh_from_db()
        orphan_statuses_adopt(message)
        messages_changed_on_commit(message.salon_id, [message.conversation_id])
    message.refresh_from_db()
    return message


@transaction.atomic
def _message_fail(message: Message, error: dict) -> Message:
    logger.warning("Outbound message %s failed: %s", message.pk, error)
    Message.objects.filter(pk=message.pk, status=Message.Status.QUEUED).update(
        status=Message.Status.FAILED,
        error=send_error_annotate(error),
        failed_at=timezone.now(),
    )
    messages_changed_on_commit(message.salon_id, [message.conversation_id])
    message.refresh_from_db()
    return message


def operator_test_send(
    *,
    salon_id: str,
    to: str,
    what: str,
    send: Callable[[Any, Salon, str], SendResult],
) -> str:
    """An operators' test send (POST /admin/queue/test) from the salon's number
    to ``to``: ``send(client, salon, wa_id)`` through the configured backend,
    paced by the throughput governor like every send (SendDeferred when it
    must wait). Nothing is recorded: the number is the operator's, not a
    customer's. Returns the wamid."""
    salon = Salon.objects.get(pk=salon_id)
    wa_id = wa_id_from_phone(to)
    client = whatsapp_client()
    try:
        result = governed_send(
            GovernedSend(
                phone_number_id=salon.whatsapp_phone_number_id,
                recipient=wa_id,
                rate=salon_rate(salon),
                call=lambda: send(client, salon, wa_id),
            )
        )
    except WhatsAppError as exc:
        if exc.retryable:
            raise RetryableJobError(str(exc)) from exc
        raise
    logger.info("Test %s %s sent to %s", what, result.wamid, to)
    return result.wamid


def message_test_send(*, salon_id: str, to: str, text: str) -> str:
    """The operators' test job on whatsapp:outbound: ``text`` to ``to``."""
    return operator_test_send(
        salon_id=salon_id,
        to=to,
        what="message",
        send=lambda client, salon, wa_id: client.send_text(
            phone_number_id=salon.whatsapp_phone_number_id, to=wa_id, body=text
        ),
    )
