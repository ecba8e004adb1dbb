"""Reading Meta's webhook JSON: pure functions, no database.

Meta's bodies are untrusted: any field may be missing or of another type, so
every reader here degrades to an empty value instead of raising.
"""

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
    if kind == "text":
        return str(data.get("body", "")), {}
    if kind in MEDIA_TYPES:
        keys = ("id", "mime_type", "sha256", "caption", "filename", "voice", "animated")
        content = {key: data[key] for key in keys if key in data}
        return str(data.get("caption") or data.get("filename") or ""), content
    if kind == "location":
        keys = ("latitude", "longitude", "name", "address", "url")
        content = {key: data[key] for key in keys if key in data}
        body = ", ".join(str(data[k]) for k in ("name", "address") if data.get(k))
        return body, content
    if kind == "interactive":
        reply_type = data.get("type", "")
        reply = as_dict(data.get(reply_type))
        content = {"interactive_type": reply_type, **reply}
        return str(reply.get("title", "")), content
    if kind == "button":
        return str(data.get("text", "")), {
            "payload": data.get("payload", ""),
            "text": data.get("text", ""),
        }
    if kind == "reaction":
        emoji = data.get("emoji") or ""
        return emoji, {
            "message_id": data.get("message_id", ""),
            "emoji": emoji,
            "removed": not emoji,
        }
    if kind == "contacts":
        contacts = as_list(message.get("contacts"))
        names = [
            as_dict(as_dict(c).get("name")).get("formatted_name", "") for c in contacts
        ]
        return ", ".join(n for n in names if n), {"contacts": contacts}
    # unsupported, order, system and types Meta adds later: keep what came.
    return "", dict(data)
