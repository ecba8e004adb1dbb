"""Send errors a person must act on, shown on the message and counted per
salon on the health page (GET /admin/queue/health, ``whatsapp`` section):

- 131047: the customer has not written in 24 hours (send a template instead);
- 131026: undeliverable (number not on WhatsApp, old app, blocked us);
- 132xxx: the template (missing in that language, wrong parameters, paused);
- 190: the access token expired: every send of that salon fails until it is
  replaced, so it also raises the ``whatsapp_token_expired`` alert.
"""

from datetime import timedelta
from typing import Any

from django.db.models import Count
from django.utils import timezone

from messaging.models import Message

#: How far back the health page counts.
SEND_ERRORS_WINDOW = timedelta(hours=24)
TOKEN_EXPIRED_ALERT = "whatsapp_token_expired"

ACTIONS = {
    "outside_window": "The customer has not written in 24 hours: send a template.",
    "undeliverable": "WhatsApp cannot deliver to this number: reach the customer "
    "another way.",
    "template": "Meta refused the template: check it in WhatsApp Manager.",
    "token_expired": "The WhatsApp access token expired: replace it; every send "
    "fails until then.",
}


def send_error_kind(code: Any) -> str | None:
    """Which kind of person-needed error Meta's code is, if any."""
    try:
        code = int(code)
    except (TypeError, ValueError):
        return None
    if code == 131047:
        return "outside_window"
    if code == 131026:
        return "undeliverable"
    if 132000 <= code <= 132999:
        return "template"
    if code == 190:
        return "token_expired"
    return None


def send_error_annotate(error: dict[str, Any]) -> dict[str, Any]:
    """Meta's error as stored on the message, with what a person should do."""
    kind = send_error_kind(error.get("code"))
    if kind is None:
        return error
    return {**error, "needs_attention": kind, "action": ACTIONS[kind]}


def send_errors_by_salon(*, since=None) -> dict[str, dict[str, int]]:
    """{salon id: {kind: failed messages}} since ``since`` (default: 24 h)."""
    since = since or timezone.now() - SEND_ERRORS_WINDOW
    rows = (
        Message.objects.filter(
            direction=Message.Direction.OUTBOUND,
            status=Message.Status.FAILED,
            failed_at__gte=since,
            error__needs_attention__isnull=False,
        )
        .values_list("salon_id", "error__needs_attention")
        .annotate(count=Count("id"))
        .order_by()
    )
    counts: dict[str, dict[str, int]] = {}
    for salon_id, kind, count in rows:
        counts.setdefault(str(salon_id), {})[kind] = count
    return counts


def send_errors_health(alerts: list[dict[str, Any]]) -> dict[str, Any]:
    """The health page's ``whatsapp_send_errors`` section; an expired token
    raises an alert for its salon."""
    counts = send_errors_by_salon()
    for salon_id, kinds in counts.items():
        if kinds.get("token_expired"):
            alerts.append(
                {
                    "alert": TOKEN_EXPIRED_ALERT,
                    "target": salon_id,
                    "message": f"salon {salon_id}: {ACTIONS['token_expired']}",
                }
            )
    return {"window_hours": SEND_ERRORS_WINDOW.total_seconds() / 3600, **counts}
