"""Templates follow Meta's lifecycle: status webhooks applied by business
account, name and language; the reminder's language order; paused, disabled
and rejected templates never used; the choice recorded on the booking."""

from datetime import timedelta

import pytest
from django.test import Client
from django.utils import timezone

from bookings import reminder_sending, reminders, services
from bookings.models import BookingReminder
from messaging import inbox
from messaging.models import Message, MessageTemplate, WebhookEvent
from messaging.selectors import template_for_language
from tests.factories import SalonFactory, TemplateFactory
from tests.messaging.conftest import fixture_bytes, post_webhook

pytestmark = pytest.mark.django_db

WABA = "102290129340398"  # the entry id of fixture 28
FIXTURE = "28_message_template_status_update.json"


def chosen(salon, language=None):
    template = template_for_language(
        salon=salon, name="booking_reminder", language=language or salon.language
    )
    return template.language if template else None


def reminder_template(salon, language, **fields):
    return TemplateFactory(
        salon=salon, name="booking_reminder", language=language, **fields
    )


# --- the language order ------------------------------------------------------


def test_the_salons_language_comes_first():
    salon = SalonFactory(language="en_US")
    for language in ("en", "en_US", "es_ES"):
        reminder_template(salon, language)
    assert chosen(salon) == "en_US"


def test_then_the_base_language_and_the_reverse():
    salon = SalonFactory(language="en_US")
    reminder_template(salon, "en")
    reminder_template(salon, "es_ES")
    assert chosen(salon) == "en"  # en for en_US
    base = SalonFactory(language="en")
    reminder_template(base, "en_US")
    reminder_template(base, "es_ES")
    assert chosen(base) == "en_US"  # and the reverse


def test_then_the_only_approved_language_and_else_none():
    salon = SalonFactory(language="es_ES")
    reminder_template(salon, "en_US")
    reminder_template(salon, "fr_FR", status="pending")
    assert chosen(salon) == "en_US"
    reminder_template(salon, "de_DE")
    assert chosen(salon) is None  # two approved, neither the salon's


@pytest.mark.parametrize("status", ["paused", "disabled", "rejected", "pending"])
def test_a_template_not_approved_is_never_chosen(status):
    salon = SalonFactory(language="en_US")
    reminder_template(salon, "en_US", status=status)
    assert chosen(salon) is None
    reminder_template(salon, "en")
    assert chosen(salon) == "en"


@pytest.mark.django_db(transaction=True)
def test_the_reminder_records_the_template_and_language_it_used():
    salon = SalonFactory(language="en_US")
    reminder_template(salon, "en_US", status="paused")
    reminder_template(salon, "en", body="Hello {{1}}: {{2}} on {{3}}.")
    booking = services.booking_create(
        salon=salon,
        customer_name="Ann",
        customer_phone="+34612345678",
        service_name="Haircut",
        start_at=timezone.now() + timedelta(minutes=59),
    )
    reminders.reminder_dispatch()
    reminder = BookingReminder.objects.get(booking=booking, status="queued")

    reminder_sending.reminder_deliver(reminder_id=reminder.pk)

    booking.refresh_from_db()
    assert booking.metadata["reminder_templates"] == {
        "hour_before": {"name": "booking_reminder", "language": "en"}
    }
    message = Message.objects.get()
    assert message.content["template"]["language"] == "en"
    assert message.body.startswith("Hello Ann: Haircut on ")


# --- status webhooks ------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_status_webhooks_update_the_accounts_templates_with_metas_reason():
    salon = SalonFactory(whatsapp_business_account_id=WABA)
    other = SalonFactory(whatsapp_business_account_id="999999999999999")
    reminder = TemplateFactory(
        salon=salon, name="appointment_reminder", status="pending"
    )
    offer = TemplateFactory(salon=salon, name="spring_colour_offer")
    slot = TemplateFactory(salon=salon, name="slot_offer")
    spanish_slot = TemplateFactory(salon=salon, name="slot_offer", language="es_ES")
    theirs = TemplateFactory(salon=other, name="slot_offer")

    assert post_webhook(Client(), fixture_bytes(FIXTURE)).status_code == 200
    inbox.webhook_events_process_batch(limit=10)

    def state(template):
        template.refresh_from_db()
        return template.status, template.status_reason

    assert state(reminder) == ("approved", "")
    assert state(offer) == ("rejected", "INCORRECT_CATEGORY")
    # PAUSED, then DISABLED in the same body: the last event wins.
    status, reason = state(slot)
    assert status == "disabled" and "disable_date 1781640000" in reason
    assert state(spanish_slot) == ("approved", "")  # another language
    assert state(theirs) == ("approved", "")  # another tenant's account
    event = WebhookEvent.objects.get()
    assert event.status == "processed"


@pytest.mark.django_db(transaction=True)
def test_a_paused_template_carries_metas_explanation():
    salon = SalonFactory(whatsapp_business_account_id=WABA)
    slot = TemplateFactory(salon=salon, name="slot_offer")
    body = fixture_bytes(FIXTURE).replace(b'"event": "DISABLED"', b'"event": "FLAGGED"')

    post_webhook(Client(), body)
    inbox.webhook_events_process_batch(limit=10)

    slot.refresh_from_db()
    assert slot.status == MessageTemplate.Status.PAUSED
    assert slot.status_reason.startswith("FIRST_PAUSE Your WhatsApp message template")
    assert chosen(salon, "en_US") is None


@pytest.mark.django_db(transaction=True)
def test_an_unknown_account_changes_nothing_and_is_noted():
    salon = SalonFactory(whatsapp_business_account_id="111111111111111")
    template = TemplateFactory(salon=salon, name="spring_colour_offer")

    post_webhook(Client(), fixture_bytes(FIXTURE))
    inbox.webhook_events_process_batch(limit=10)

    template.refresh_from_db()
    assert template.status == "approved"
    event = WebhookEvent.objects.get()
    assert "unknown business account '102290129340398'" in event.last_error
