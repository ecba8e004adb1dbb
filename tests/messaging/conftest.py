"""Meta's webhook fixtures, signed exactly as Meta signs them (over the file bytes)."""

import hashlib
import hmac
import json
from pathlib import Path

import pytest
from django.conf import settings
from django.utils import timezone

from messaging.models import Message
from tests.factories import ConversationFactory, MessageFactory, SalonFactory

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "whatsapp"
SALON_PHONE_NUMBER_ID = "106540352242922"
WEBHOOK_URL = "/webhooks/whatsapp/"

#: The salon's outbound messages the fixtures refer to (fixtures README).
OUTBOUND_WAMIDS = {
    "reminder_to_maria": (
        "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI4NUY5NDkwRDU0N0M3NEQzQTIA",
        "16505551234",
    ),
    "buttons_to_priya": (
        "wamid.HBgLMTY1MDU1NTk4NzYVAgARGBIxQ0ZEM0FGRERCOUE2OTgzRTkA",
        "16505559876",
    ),
    "text_to_tom": (
        "wamid.HBgLMTY1MDU1NTMzNzcVAgARGBIzRUI5MzQxQTgwMjNCRjkxQjIA",
        "16505553377",
    ),
    "offer_to_dana": (
        "wamid.HBgLMTY1MDU1NTAxNDIVAgARGBJCNTY0OEM5MzlDNjhEQUVEOTYA",
        "16505550142",
    ),
}


def fixture_bytes(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> dict:
    return json.loads(fixture_bytes(name))


def sign(body: bytes, secret: str | None = None) -> str:
    secret = settings.WHATSAPP_APP_SECRET if secret is None else secret
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def post_webhook(client, body: bytes | dict, *, signature: str | None = None):
    if isinstance(body, dict):
        body = json.dumps(body).encode()
    headers = (
        {} if signature == "" else {"X-Hub-Signature-256": signature or sign(body)}
    )
    return client.generic(
        "POST", WEBHOOK_URL, body, content_type="application/json", headers=headers
    )


def webhook_envelope(value: dict) -> dict:
    """A webhook body for the test salon's number carrying this ``value``."""
    return {
        "object": "whatsapp_business_account",
        "entry": [
            {
                "id": "102290129340398",
                "changes": [
                    {
                        "field": "messages",
                        "value": {
                            "messaging_product": "whatsapp",
                            "metadata": {
                                "display_phone_number": "15550783881",
                                "phone_number_id": SALON_PHONE_NUMBER_ID,
                            },
                            **value,
                        },
                    }
                ],
            }
        ],
    }


def status_body(wamid: str, *statuses: tuple[str, int], recipient="16505551234"):
    """One webhook body carrying these (status, unix time) for one wamid."""
    return webhook_envelope(
        {
            "statuses": [
                {
                    "id": wamid,
                    "status": name,
                    "timestamp": str(at),
                    "recipient_id": recipient,
                }
                for name, at in statuses
            ]
        }
    )


def text_body(wamid: str, *, wa_id="16505551234", text="hi", at=1781000000):
    return webhook_envelope(
        {
            "contacts": [{"profile": {"name": "Customer"}, "wa_id": wa_id}],
            "messages": [
                {
                    "from": wa_id,
                    "id": wamid,
                    "timestamp": str(at),
                    "type": "text",
                    "text": {"body": text},
                }
            ],
        }
    )


@pytest.fixture
def salon(db):
    return SalonFactory(whatsapp_phone_number_id=SALON_PHONE_NUMBER_ID)


@pytest.fixture
def outbound(salon) -> dict[str, Message]:
    """The salon's sent messages that the fixtures' statuses and replies name."""
    messages = {}
    for key, (wamid, wa_id) in OUTBOUND_WAMIDS.items():
        conversation = ConversationFactory(salon=salon, customer_wa_id=wa_id)
        messages[key] = MessageFactory(
            conversation=conversation,
            wamid=wamid,
            direction=Message.Direction.OUTBOUND,
            body=f"outbound {key}",
            status=Message.Status.SENT,
            created_at=timezone.now(),
        )
    return messages
