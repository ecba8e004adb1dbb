"""The lean webhook path (issue 17): ``POST /webhooks/whatsapp/`` answered by
a bare WSGI function mounted in front of Django (saas/wsgi.py), in the same
process, with the same settings and database connections.

Meta's POSTs are the product's hottest requests, and they use none of what
Django's request cycle costs: sessions, CSRF, auth, messages, DRF, template
context, the per-request connection health check. The contract is the
Django view's (messaging/api/views.py), through the same checks below:
413 over 4 MiB before reading the body, 403 on a bad signature before
storing, 400 on a body that is not a JSON object, 503 when the database
refuses the commit (Meta retries), 200 only once the body is committed. The
GET handshake and every other path and method fall through to Django.
"""

import logging

import orjson
from django.conf import settings
from django.db import DatabaseError

from messaging.inbox_commit import group_commit
from messaging.whatsapp import signature_matches

logger = logging.getLogger(__name__)

WEBHOOK_PATH = "/webhooks/whatsapp/"

_REASONS = {
    200: "200 OK",
    400: "400 Bad Request",
    403: "403 Forbidden",
    413: "413 Request Entity Too Large",
    500: "500 Internal Server Error",
    503: "503 Service Unavailable",
}


class Refused(Exception):
    """A webhook answered without storing anything: (status, text)."""

    def __init__(self, status: int, text: str):
        super().__init__(text)
        self.status, self.text = status, text


def webhook_length_check(content_length: str | None) -> None:
    """413 before reading a body announced over the limit."""
    try:
        length = int(content_length or 0)
    except ValueError:
        raise Refused(400, "bad Content-Length") from None
    if length > settings.WEBHOOK_MAX_BODY_BYTES:
        raise Refused(413, "body over 4 MiB")


def webhook_body_check(body: bytes, signature: str | None) -> str:
    """The verified body as text, or Refused: 413, 403, then 400."""
    if len(body) > settings.WEBHOOK_MAX_BODY_BYTES:
        raise Refused(413, "body over 4 MiB")
    if not signature_matches(body, signature, settings.WHATSAPP_APP_SECRET):
        raise Refused(403, "invalid signature")
    try:
        text = body.decode("utf-8")
        if not isinstance(orjson.loads(body), dict):
            raise ValueError("not a JSON object")
    except (ValueError, RecursionError):  # orjson.JSONDecodeError is a ValueError
        raise Refused(400, "body is not a JSON object") from None
    return text


def _post(environ) -> tuple[int, str]:
    try:
        webhook_length_check(environ.get("CONTENT_LENGTH"))
        with group_commit.arriving() as arrival:
            # At most one byte past the limit: a chunked body has no length.
            body = environ["wsgi.input"].read(settings.WEBHOOK_MAX_BODY_BYTES + 1)
            text = webhook_body_check(body, environ.get("HTTP_X_HUB_SIGNATURE_256"))
            arrival.store(text)
    except Refused as refused:
        return refused.status, refused.text
    except DatabaseError:
        logger.exception("Webhook not stored; answering 503 so Meta retries")
        return 503, "storage unavailable, retry later"
    return 200, "EVENT_RECEIVED"


class WebhookFront:
    """WSGI middleware: the webhook's POST here, everything else to Django."""

    def __init__(self, django_app):
        self.django_app = django_app

    def __call__(self, environ, start_response):
        if (
            environ.get("REQUEST_METHOD") != "POST"
            or environ.get("PATH_INFO") != WEBHOOK_PATH
        ):
            return self.django_app(environ, start_response)
        try:
            status, text = _post(environ)
        except Exception:
            logger.exception("Webhook failed")
            status, text = 500, "internal error"
        payload = text.encode()
        start_response(
            _REASONS[status],
            [
                ("Content-Type", "text/plain; charset=utf-8"),
                ("Content-Length", str(len(payload))),
            ],
        )
        return [payload]
