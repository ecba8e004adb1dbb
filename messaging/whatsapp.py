"""The WhatsApp client: one interface, backends chosen by WHATSAPP_BACKEND.

``console`` (development) logs the message and returns a generated wamid;
``cloud_api`` talks to Meta's Graph API (WHATSAPP_API_BASE_URL).
Callers use ``whatsapp_client()`` and handle WhatsAppError: ``retryable``
says whether a retry with backoff can help (decided by Meta's error code).
"""

import logging
import uuid
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class SendResult:
    wamid: str
    response: dict[str, Any] = field(default_factory=dict)


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


BACKENDS: dict[str, str] = {
    "console": "messaging.whatsapp.ConsoleBackend",
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
