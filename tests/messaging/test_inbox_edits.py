"""Edits change the message they edit, keeping its history; reactions replace
the same customer's earlier reaction (messaging/inbox_edits.py via the inbox)."""

import copy

import pytest

from messaging.models import Message
from tests.messaging.conftest import fixture_json, webhook_envelope
from tests.messaging.test_services import ingest

pytestmark = pytest.mark.django_db

ORIGINAL = "wamid.HBgLMTY1MDU1NTEyMzQVAgASGBQ0RjFBMjFDQUQ3NUJBODY3QTMyQQA="
MORNING = "Hi! Can I book a haircut for Saturday morning?"
AFTERNOON = "Hi! Can I book a haircut for Saturday afternoon?"


def edit_body(wamid: str, text: str, at: int) -> dict:
    body = copy.deepcopy(fixture_json("19_edit_inbound.json"))
    message = body["entry"][0]["changes"][0]["value"]["messages"][0]
    message.update(id=wamid, timestamp=str(at))
    message["edit"]["message"]["text"]["body"] = text
    return body


def test_an_edit_rewrites_the_original_once_even_when_replayed(salon):
    ingest(fixture_json("01_text_inbound.json"))
    ingest(fixture_json("19_edit_inbound.json"))
    ingest(fixture_json("19_edit_inbound.json"))  # Meta retries deliveries
    (original,) = Message.objects.all()
    assert original.wamid == ORIGINAL and original.body == AFTERNOON
    assert [e["previous_body"] for e in original.content["edits"]] == [MORNING]


def test_edits_out_of_order_end_with_the_newest_text(salon):
    ingest(fixture_json("01_text_inbound.json"))
    ingest(edit_body("wamid.EDIT2", "third version", 1781000400))
    ingest(edit_body("wamid.EDIT1", "second version", 1781000300))
    original = Message.objects.get(wamid=ORIGINAL)
    assert original.body == "third version"
    assert [e["edit_wamid"] for e in original.content["edits"]] == [
        "wamid.EDIT2",
        "wamid.EDIT1",
    ]


def test_an_edit_of_a_message_never_stored_is_kept_as_a_message(salon):
    ingest(fixture_json("19_edit_inbound.json"))
    (kept,) = Message.objects.all()
    assert kept.type == "edit" and kept.body == AFTERNOON
    assert kept.content["original_message_id"] == ORIGINAL


def reaction_body(wamid: str, emoji: str, at: int, target: str) -> dict:
    return webhook_envelope(
        {
            "contacts": [{"profile": {"name": "Maria"}, "wa_id": "16505551234"}],
            "messages": [
                {
                    "from": "16505551234",
                    "id": wamid,
                    "timestamp": str(at),
                    "type": "reaction",
                    "reaction": {"message_id": target, "emoji": emoji},
                }
            ],
        }
    )


def test_a_new_reaction_replaces_the_earlier_one_and_a_removal_ends_it(salon):
    ingest(fixture_json("01_text_inbound.json"))
    ingest(reaction_body("wamid.R1", "\U0001f44d", 1781000500, ORIGINAL))
    ingest(reaction_body("wamid.R2", "\u2764\ufe0f", 1781000600, ORIGINAL))
    r1 = Message.objects.get(wamid="wamid.R1")
    assert r1.content["replaced_by"] == "wamid.R2"
    ingest(reaction_body("wamid.R3", "", 1781000700, ORIGINAL))
    reactions = {m.wamid: m for m in Message.objects.filter(type="reaction")}
    # Each earlier reaction points at the one that stands now: the removal.
    assert reactions["wamid.R1"].content["replaced_by"] == "wamid.R3"
    assert reactions["wamid.R2"].content["replaced_by"] == "wamid.R3"
    assert "replaced_by" not in reactions["wamid.R3"].content
    assert reactions["wamid.R3"].body == "Reaction removed"
    assert {r.reaction_to.wamid for r in reactions.values()} == {ORIGINAL}
