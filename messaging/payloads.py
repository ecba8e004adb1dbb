"""Reading Meta's webhook JSON: pure functions, no database.

Meta's bodies are untrusted: any field may be missing or of another type, so
every reader here degrades to an empty value instead of raising.
"""

import json
from datetime import UTC, datetime
from typing import Any

MEDIA_TYPES = ("image", "video", "audio", "document", "sticker")


def as_list(value: Any) -> list:
    return value if isinstance(value, list) else []


def as_dict(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def meta_time(value: Any) -> datetime | None:
    """Meta's unix-seconds strings as aware datetimes; None if unreadable."""
    try:
        return datetime.fromtimestamp(int(value), tz=UTC)
    except (TypeError, ValueError, OverflowError, OSError):
        return None


def message_error(message: dict) -> dict | None:
    """The first of a message's or status's ``errors``, as we store it."""
    errors = as_list(message.get("errors"))
    if not errors:
        return None
    error = as_dict(errors[0])
    return {
        "code": error.get("code"),
        "title": error.get("title") or error.get("message", ""),
        "details": as_dict(error.get("error_data")).get("details", ""),
    }


def inbound_content(message: dict) -> tuple[str, dict]:
    """What a person needs to see: (body, content) for each message type."""
    kind = message.get("type") or "unknown"
    data = as_dict(message.get(kind))
    reader = _READERS.get(kind)
    if reader is not None:
        return reader(message, data)
    # Types Meta adds later: keep what came.
    return "", dict(data)


def _text(message: dict, data: dict) -> tuple[str, dict]:
    return str(data.get("body", "")), {}


def _media(message: dict, data: dict) -> tuple[str, dict]:
    keys = ("id", "mime_type", "sha256", "caption", "filename", "voice", "animated")
    content = {key: data[key] for key in keys if key in data}
    return str(data.get("caption") or data.get("filename") or ""), content


def _location(message: dict, data: dict) -> tuple[str, dict]:
    keys = ("latitude", "longitude", "name", "address", "url")
    content = {key: data[key] for key in keys if key in data}
    body = ", ".join(str(data[k]) for k in ("name", "address") if data.get(k))
    if not body and "latitude" in data and "longitude" in data:
        body = f"Location {data['latitude']}, {data['longitude']}"
    return body, content


def _interactive(message: dict, data: dict) -> tuple[str, dict]:
    reply_type = str(data.get("type", ""))
    reply = as_dict(data.get(reply_type))
    content = {"interactive_type": reply_type, **reply}
    if reply_type == "nfm_reply":
        return _flow_reply(reply, content)
    body = str(reply.get("title", ""))
    if reply.get("description"):
        body = f"{body} ({reply['description']})"
    return body, content


def _flow_reply(reply: dict, content: dict) -> tuple[str, dict]:
    """A WhatsApp Flow's answer: ``response_json`` is a JSON string; its
    ``flow_token`` says which flow it answers, never the ``body`` ("Sent")."""
    try:
        response = json.loads(reply.get("response_json") or "{}")
    except (TypeError, ValueError):
        response = None
    if not isinstance(response, dict):
        content["response_error"] = "response_json is not a JSON object"
        return str(reply.get("body", "")), content
    content["response"] = response
    content["flow_token"] = str(response.get("flow_token", ""))
    answers = [
        f"{key}: {value}" for key, value in response.items() if key != "flow_token"
    ]
    name = reply.get("name") or "flow"
    return f"Form reply ({name}): " + "; ".join(answers), content


def _button(message: dict, data: dict) -> tuple[str, dict]:
    return str(data.get("text", "")), {
        "payload": data.get("payload", ""),
        "text": data.get("text", ""),
    }


def _reaction(message: dict, data: dict) -> tuple[str, dict]:
    emoji = data.get("emoji") or ""
    return emoji or "Reaction removed", {
        "message_id": data.get("message_id", ""),
        "emoji": emoji,
        "removed": not emoji,
    }


def _contacts(message: dict, data: dict) -> tuple[str, dict]:
    contacts = as_list(message.get("contacts"))
    names = [
        as_dict(as_dict(c).get("name")).get("formatted_name", "") for c in contacts
    ]
    return ", ".join(n for n in names if n), {"contacts": contacts}


def _order(message: dict, data: dict) -> tuple[str, dict]:
    items = [as_dict(item) for item in as_list(data.get("product_items"))]
    totals: dict[str, float] = {}
    for item in items:
        try:
            amount = float(item.get("item_price", 0)) * float(item.get("quantity", 0))
        except (TypeError, ValueError):
            continue
        currency = str(item.get("currency", ""))
        totals[currency] = totals.get(currency, 0.0) + amount
    count = sum(
        int(i.get("quantity") or 0) for i in items if _is_int(i.get("quantity"))
    )
    total = ", ".join(f"{amount:.2f} {cur}".strip() for cur, amount in totals.items())
    body = f"Order: {count} item{'s' if count != 1 else ''}"
    if total:
        body += f", {total}"
    if data.get("text"):
        body += f" ({data['text']})"
    return body, dict(data)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _system(message: dict, data: dict) -> tuple[str, dict]:
    return str(data.get("body") or data.get("type") or ""), dict(data)


def _unsupported(message: dict, data: dict) -> tuple[str, dict]:
    error = message_error(message) or {}
    body = "Unsupported message"
    if data.get("type"):
        body += f" ({data['type']})"
    reason = error.get("details") or error.get("title")
    if reason:
        body += f": {reason}"
    return body, dict(data)


def _edit(message: dict, data: dict) -> tuple[str, dict]:
    """An edit carries the new version of an earlier message; the store
    applies it to that message (messaging/inbox_edits.py)."""
    new = as_dict(data.get("message"))
    body, content = inbound_content(new) if new else ("", {})
    return body, {
        "original_message_id": str(data.get("original_message_id") or ""),
        "type": str(new.get("type") or ""),
        "content": content,
    }


_READERS = {
    "text": _text,
    **{kind: _media for kind in MEDIA_TYPES},
    "location": _location,
    "interactive": _interactive,
    "button": _button,
    "reaction": _reaction,
    "contacts": _contacts,
    "order": _order,
    "system": _system,
    "unsupported": _unsupported,
    "edit": _edit,
}
