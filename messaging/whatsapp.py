"""The WhatsApp client: one interface, backends chosen by WHATSAPP_BACKEND.

``console`` (development) logs the message and returns a generated wamid;
``cloud_api`` talks to Meta's Graph API (WHATSAPP_API_BASE_URL).
Callers use ``whatsapp_client()`` and handle WhatsAppError: ``retryable``
says whether a retry with backoff can help (decided by Meta's error code).
"""

import hashlib
import hmac
import logging
import re
import threading
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

import httpx
from django.conf import settings

logger = logging.getLogger(__name__)


def signature_matches(body: bytes, header: str | None, secret: str) -> bool:
    """X-Hub-Signature-256 is "sha256=" + HMAC-SHA256(raw body, app secret),
    compared in constant time."""
    if not header or not secret or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    given = header.removeprefix("sha256=").strip().lower()
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "replace"))


#: A business-scoped user id (BSUID): country code, optional ".ENT." for a
#: parent BSUID, then up to 128 alphanumerics. Phone numbers are digits only.
BSUID_RE = re.compile(r"^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$")


def is_bsuid(value: str) -> bool:
    return bool(BSUID_RE.match(value or ""))


def recipient_fields(to: str) -> dict[str, str]:
    """Meta's Send API addresses a phone number with ``to`` and a BSUID (or
    parent BSUID) with ``recipient``."""
    return {"recipient": to} if is_bsuid(to) else {"to": to}


@dataclass(frozen=True)
class SendResult:
    wamid: str
    response: dict[str, Any] = field(default_factory=dict)


#: Connections one process keeps to the Graph API: one per send in flight
#: (messaging/governed_sending.py sizes those from the number's rate x Meta's
#: answer time, up to this many), all kept alive between rounds. A smaller pool
#: queues sends behind each other and a round reopens what it closed: both
#: make sends arrive late and bunched, and Meta counts arrivals (130429).
SEND_CONNECTIONS = 320


class WhatsAppError(Exception):
    """Meta refused or could not take the message."""

    def __init__(
        self,
        message: str,
        *,
        code: int | None = None,
        title: str = "",
        details: str = "",
        retryable: bool = False,
    ):
        super().__init__(message)
        self.code = code
        self.title = title
        self.details = details
        self.retryable = retryable

    def as_dict(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "title": self.title or str(self),
            "details": self.details,
        }


class WhatsAppBackend(Protocol):
    def send_text(
        self, *, phone_number_id: str, to: str, body: str, reply_to_wamid: str = ""
    ) -> SendResult: ...

    def send_template(
        self,
        *,
        phone_number_id: str,
        to: str,
        name: str,
        language: str,
        parameters: list[str],
    ) -> SendResult: ...


class ConsoleBackend:
    """Development backend: logs what would be sent, returns a fake wamid."""

    def _accept(
        self, kind: str, phone_number_id: str, to: str, text: str
    ) -> SendResult:
        wamid = f"wamid.console.{uuid.uuid4().hex}"
        logger.info(
            "WhatsApp %s from %s to %s: %s (%s)", kind, phone_number_id, to, text, wamid
        )
        return SendResult(wamid=wamid, response={"messages": [{"id": wamid}]})

    def send_text(
        self, *, phone_number_id: str, to: str, body: str, reply_to_wamid: str = ""
    ) -> SendResult:
        return self._accept("text", phone_number_id, to, body)

    def send_template(
        self,
        *,
        phone_number_id: str,
        to: str,
        name: str,
        language: str,
        parameters: list[str],
    ) -> SendResult:
        return self._accept(
            "template", phone_number_id, to, f"{name}[{language}] {parameters}"
        )


#: Meta error codes a later attempt can get through: throughput and pair rate
#: limits, spam rate limit, transient service errors.
RETRYABLE_CODES = frozenset(
    {1, 2, 4, 80007, 130429, 131000, 131016, 131048, 131056, 133004}
)
TOKEN_EXPIRED = 190


def classify_graph_error(payload: Any, *, http_status: int) -> WhatsAppError:
    """A WhatsAppError from a Graph API answer, retryable by Meta's error code.

    Codes not known to be transient (131047 outside the 24 h window, 131026
    undeliverable, 131050/131051, the 132xxx template errors, 190 token
    expired...) fail the message without a retry. An answer that is not a
    Graph error envelope (a proxy's 502 page) says nothing definite and is
    retried.
    """
    error = payload.get("error") if isinstance(payload, dict) else None
    if not isinstance(error, dict) or not isinstance(error.get("code"), int):
        return WhatsAppError(
            f"Graph API answered HTTP {http_status} without an error code",
            title=f"HTTP {http_status}",
            retryable=True,
        )
    code = error["code"]
    error_data = error.get("error_data") or {}
    details = error_data.get("details", "") if isinstance(error_data, dict) else ""
    exc = WhatsAppError(
        error.get("message") or f"Graph API error {code}",
        code=code,
        title=error.get("message", ""),
        details=details,
        retryable=code in RETRYABLE_CODES,
    )
    if code == TOKEN_EXPIRED:
        logger.error(
            "WhatsApp access token rejected (code 190: %s). Replace "
            "WHATSAPP_ACCESS_TOKEN; every send fails until then.",
            exc,
        )
    return exc


class CloudApiBackend:
    """Meta's Cloud API over httpx: POST {base}/{phone_number_id}/messages."""

    def __init__(
        self,
        *,
        base_url: str | None = None,
        access_token: str | None = None,
        timeout: float | None = None,
    ):
        self._base_url = base_url
        self._access_token = access_token
        self._timeout = timeout
        self._http: httpx.Client | None = None
        self._http_lock = threading.Lock()

    @property
    def http(self) -> httpx.Client:
        # Created on first use, so each prefork child gets its own pool; once,
        # under a lock: a round's sender threads all ask at the same moment,
        # and each client made loads the CA bundle (tens of ms under the GIL,
        # which made the first sends arrive late and bunched).
        if self._http is None:
            with self._http_lock:
                if self._http is None:
                    self._http = self._http_new()
        return self._http

    def _http_new(self) -> httpx.Client:
        timeout = self._timeout or settings.WHATSAPP_HTTP_TIMEOUT_SECONDS
        return httpx.Client(
            timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
            limits=httpx.Limits(
                max_connections=SEND_CONNECTIONS,
                max_keepalive_connections=SEND_CONNECTIONS,
            ),
        )

    def _post(self, phone_number_id: str, payload: dict[str, Any]) -> SendResult:
        base = (self._base_url or settings.WHATSAPP_API_BASE_URL).rstrip("/")
        token = self._access_token or settings.WHATSAPP_ACCESS_TOKEN
        try:
            response = self.http.post(
                f"{base}/{phone_number_id}/messages",
                json=payload,
                headers={"Authorization": f"Bearer {token}"},
            )
        except httpx.HTTPError as exc:
            raise WhatsAppError(
                f"Graph API unreachable: {exc!r}",
                title="network error",
                retryable=True,
            ) from exc
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.is_success and isinstance(answer, dict):
            messages = answer.get("messages")
            first = messages[0] if isinstance(messages, list) and messages else {}
            wamid = first.get("id") if isinstance(first, dict) else None
            if wamid:
                return SendResult(wamid=wamid, response=answer)
        raise classify_graph_error(answer, http_status=response.status_code)

    def send_text(
        self, *, phone_number_id: str, to: str, body: str, reply_to_wamid: str = ""
    ) -> SendResult:
        payload: dict[str, Any] = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            **recipient_fields(to),
            "type": "text",
            "text": {"preview_url": False, "body": body},
        }
        if reply_to_wamid:
            payload["context"] = {"message_id": reply_to_wamid}
        return self._post(phone_number_id, payload)

    def send_template(
        self,
        *,
        phone_number_id: str,
        to: str,
        name: str,
        language: str,
        parameters: list[str],
    ) -> SendResult:
        template: dict[str, Any] = {"name": name, "language": {"code": language}}
        if parameters:
            template["components"] = [
                {
                    "type": "body",
                    "parameters": [
                        {"type": "text", "text": str(value)} for value in parameters
                    ],
                }
            ]
        payload = {
            "messaging_product": "whatsapp",
            "recipient_type": "individual",
            **recipient_fields(to),
            "type": "template",
            "template": template,
        }
        return self._post(phone_number_id, payload)


BACKENDS: dict[str, str] = {
    "console": "messaging.whatsapp.ConsoleBackend",
    "cloud_api": "messaging.whatsapp.CloudApiBackend",
}


@cache
def _backend(name: str) -> WhatsAppBackend:
    from django.utils.module_loading import import_string

    try:
        return import_string(BACKENDS[name])()
    except KeyError:
        raise ValueError(
            f"WHATSAPP_BACKEND={name!r}; expected one of {', '.join(BACKENDS)}"
        ) from None


def whatsapp_client() -> WhatsAppBackend:
    return _backend(settings.WHATSAPP_BACKEND)
