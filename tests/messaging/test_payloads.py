"""A readable body and the data in content for every inbound type
(messaging/payloads.py: pure functions on Meta's JSON)."""

from messaging.payloads import inbound_content
from tests.messaging.conftest import fixture_json


def first_message(name: str) -> dict:
    return fixture_json(name)["entry"][0]["changes"][0]["value"]["messages"][0]


def test_a_list_reply_reads_title_and_description():
    body, content = inbound_content(
        {
            "type": "interactive",
            "interactive": {
                "type": "list_reply",
                "list_reply": {
                    "id": "slot_10",
                    "title": "Sat 10:00",
                    "description": "with Alex",
                },
            },
        }
    )
    assert body == "Sat 10:00 (with Alex)"
    assert content["interactive_type"] == "list_reply" and content["id"] == "slot_10"


def test_a_flow_reply_is_parsed_and_a_broken_one_kept_as_is():
    body, content = inbound_content(first_message("22_interactive_nfm_reply_flow.json"))
    assert content["flow_token"] == "booking-flow-8841"
    assert body.startswith("Form reply (flow): service: balayage; stylist: alex")
    broken = {
        "type": "interactive",
        "interactive": {
            "type": "nfm_reply",
            "nfm_reply": {"name": "flow", "body": "Sent", "response_json": "{oops"},
        },
    }
    body, content = inbound_content(broken)
    assert body == "Sent" and content["response_json"] == "{oops"
    assert "response_error" in content


def test_an_order_reads_items_and_total_with_numbers_kept():
    body, content = inbound_content(first_message("24_order_inbound.json"))
    assert body == (
        "Order: 3 items, 42.50 USD (Please set these aside for my Saturday appointment)"
    )
    assert content["product_items"][1]["quantity"] == 2


def test_unsupported_reads_meta_error_and_keeps_content():
    body, content = inbound_content(first_message("12_unsupported_inbound.json"))
    assert body.startswith("Unsupported message (poll): ")
    assert content == {"type": "poll"}


def test_a_bare_location_reads_its_coordinates():
    body, _ = inbound_content(
        {"type": "location", "location": {"latitude": 1.5, "longitude": -2}}
    )
    assert body == "Location 1.5, -2"


def test_system_and_edit_messages_read_their_text():
    body, content = inbound_content(first_message("20_system_user_changed_number.json"))
    assert body.startswith("User Priya Raman changed") and content["wa_id"]
    body, content = inbound_content(first_message("19_edit_inbound.json"))
    assert body == "Hi! Can I book a haircut for Saturday afternoon?"
    assert content["type"] == "text" and content["original_message_id"]
