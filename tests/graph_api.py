"""A local stand-in for Meta's WhatsApp Cloud (Graph) API, for tests and benches.

It speaks real HTTP, so the product's ``CloudApiBackend`` talks to it unchanged:

    with GraphApiStandIn(token="test-token", latency=0.15) as graph:
        backend = CloudApiBackend(base_url=graph.base_url, access_token="test-token")
        ...
        assert graph.max_accepted_in_any_window("106540352242922") <= 80

or, for benches whose workers are other processes:

    python -m tests.graph_api --port 0 --latency 0.15 --token test-token
    # prints "GRAPH_STANDIN_LISTENING http://127.0.0.1:PORT/v21.0" once it listens;
    # GraphApiClient(that base url) reads the record and changes the config.

What it imitates, and where the behaviour comes from (Meta's Cloud API docs):

- ``POST /{version}/{phone_number_id}/messages``: bearer token (``190``, HTTP 401),
  body validation (``100``, HTTP 400), success bodies shaped as in
  ``tests/fixtures/whatsapp/send_api/response_success_*.json``; ``to`` (phone) or
  ``recipient`` (business-scoped user id, BSUID); ``to`` wins when both are sent.
- Throughput: at most ``throughput`` accepted sends per phone_number_id in any
  sliding window of one second (Meta's default is 80 messages/s). The window is
  sliding, not per calendar second, so ``max_accepted_in_any_window`` can never
  exceed the limit. Over it: HTTP 400, ``130429`` "Rate limit hit". Only sends
  that were accepted count (Meta's limit also counts inbound messages, which a
  stand-in never sees).
- Pair rate limit: a token bucket per (phone_number_id, recipient) holding
  ``pair_burst`` sends and refilled by one every ``pair_interval`` seconds (Meta:
  about one message every 6 s to the same user, with short bursts allowed). Over
  it: HTTP 400, ``131056``. Meta allows bursts of up to 45 that borrow from
  later quota, hence the defaults 45 and 6 s. ``pair_burst=None`` turns it off.
- Every send answer, success or error, waits ``latency`` (+/- ``jitter``).
- Media: ``GET /{version}/{media_id}`` returns a short-lived download URL on this
  server; the download needs the bearer token; an unknown id answers code 100,
  subcode 33 (GraphMethodException).

Admission (auth, validation, limits) happens when a request arrives, under one
short lock; the simulated latency is slept afterwards with no lock held.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import hashlib
import itertools
import json
import random
import re
import secrets
import string
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import deque
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULT_TOKEN = "test-token"
DEFAULT_VERSION = "v21.0"
META_THROUGHPUT_PER_SECOND = 80
META_PAIR_INTERVAL_SECONDS = 6.0
META_PAIR_BURST = 45
MEDIA_URL_TTL_SECONDS = 300.0

MESSAGE_TYPES = frozenset(
    {
        "text",
        "template",
        "image",
        "audio",
        "video",
        "document",
        "sticker",
        "location",
        "contacts",
        "interactive",
        "reaction",
    }
)
BSUID_RE = re.compile(r"^[A-Z]{2}\.(ENT\.)?[A-Za-z0-9]{1,128}$")

# code -> (HTTP status, message, details or None, extra error fields).
# The first five are copied from tests/fixtures/whatsapp/send_api/error_*.json.
ERRORS: dict[int, tuple[int, str, str | None, dict[str, Any]]] = {
    130429: (
        400,
        "(#130429) Rate limit hit",
        "Cloud API message throughput has been reached.",
        {"error_subcode": 2494055},
    ),
    131056: (
        400,
        "(#131056) (Business Account, Consumer Account) pair rate limit hit",
        "Too many messages sent from the sender phone number to the same "
        "recipient phone number in a short period of time.",
        {},
    ),
    131026: (400, "(#131026) Message undeliverable", "Message Undeliverable.", {}),
    131047: (
        400,
        "(#131047) Re-engagement message",
        "Message failed to send because more than 24 hours have passed since the "
        "customer last replied to this number.",
        {},
    ),
    190: (
        401,
        "Error validating access token: Session has expired on Tuesday, "
        "09-Jun-26 03:00:00 PDT.",
        None,
        {"error_subcode": 463},
    ),
    132001: (
        404,
        "(#132001) Template name does not exist in the translation",
        "template name (appointment_reminder) does not exist in en_US",
        {},
    ),
    131000: (500, "(#131000) Something went wrong", "Something went wrong", {}),
    131062: (
        400,
        "(#131062) Business-scoped User ID recipients are not supported for "
        "this message.",
        "Business-scoped User ID recipients are not supported for this message.",
        {},
    ),
    1: (400, "An unknown error occurred", None, {"is_transient": False}),
    2: (
        503,
        "An unexpected error has occurred. Please retry your request later.",
        None,
        {"is_transient": True},
    ),
}
INVALID_TOKEN_MESSAGE = "Invalid OAuth access token - Cannot parse access token"

_TRACE_ALPHABET = string.ascii_letters + string.digits + "-_"


def fbtrace_id() -> str:
    return "A" + "".join(random.choices(_TRACE_ALPHABET, k=22))


def error_envelope(
    code: int,
    *,
    message: str | None = None,
    details: str | None = None,
    http_status: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """Meta's ``{"error": {...}}`` body and its HTTP status for ``code``."""
    status, default_message, default_details, extra = ERRORS.get(
        code, (400, f"(#{code}) Error {code}", f"Error {code}", {})
    )
    error: dict[str, Any] = {
        "message": message or default_message,
        "type": "OAuthException",
        "code": code,
    }
    if details or default_details:
        error["error_data"] = {
            "messaging_product": "whatsapp",
            "details": details or default_details,
        }
    error["fbtrace_id"] = fbtrace_id()
    error.update(extra)
    return http_status or status, {"error": error}


def param_error(details: str, message: str = "(#100) Invalid parameter") -> Any:
    return error_envelope(100, message=message, details=details, http_status=400)


def object_missing_error(object_id: str) -> tuple[int, dict[str, Any]]:
    return 400, {
        "error": {
            "message": f"Unsupported get request. Object with ID '{object_id}' does "
            "not exist, cannot be loaded due to missing permissions, or does not "
            "support this operation. Please read the Graph API documentation at "
            "https://developers.facebook.com/docs/graph-api",
            "type": "GraphMethodException",
            "code": 100,
            "error_subcode": 33,
            "fbtrace_id": fbtrace_id(),
        }
    }


@dataclass(frozen=True)
class RequestRecord:
    at: float  # time.monotonic() on arrival
    method: str
    path: str
    status: int
    phone_number_id: str | None = None
    recipient: str | None = None
    error_code: int | None = None
    payload: Any = None


@dataclass(frozen=True)
class SendRecord:
    at: float  # time.monotonic() when the send was admitted
    phone_number_id: str
    recipient: str
    payload: dict[str, Any]
    wamid: str


@dataclass
class _Media:
    content: bytes
    mime_type: str
    announced_size: int
    served_mime_type: str
    sha256: str


@dataclass
class _Failure:
    code: int
    until: float | None = None
    remaining: int | None = None
    phone_number_id: str | None = None
    http_status: int | None = None

    def live(self, now: float) -> bool:
        if self.until is not None and now >= self.until:
            return False
        return self.remaining is None or self.remaining > 0

    def consume(self) -> None:
        if self.remaining is not None:
            self.remaining -= 1


@dataclass
class GraphConfig:
    token: str = DEFAULT_TOKEN
    latency: float = 0.15
    jitter: float = 0.0
    throughput: int | None = META_THROUGHPUT_PER_SECOND
    throughput_per_number: dict[str, int | None] = field(default_factory=dict)
    pair_burst: int | None = META_PAIR_BURST
    pair_interval: float = META_PAIR_INTERVAL_SECONDS
    media_url_ttl: float = MEDIA_URL_TTL_SECONDS
    media_latency: float = 0.0


class GraphApiStandIn:
    """The stand-in server; ``start()``/``stop()`` or use it as a context manager."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        version: str = DEFAULT_VERSION,
        token: str = DEFAULT_TOKEN,
        latency: float = 0.15,
        jitter: float = 0.0,
        throughput: int | None = META_THROUGHPUT_PER_SECOND,
        throughput_per_number: dict[str, int | None] | None = None,
        pair_burst: int | None = META_PAIR_BURST,
        pair_interval: float = META_PAIR_INTERVAL_SECONDS,
        media_url_ttl: float = MEDIA_URL_TTL_SECONDS,
        media_latency: float = 0.0,
    ):
        self.host = host
        self.port = port
        self.version = version
        self.config = GraphConfig(
            token=token,
            latency=latency,
            jitter=jitter,
            throughput=throughput,
            throughput_per_number=dict(throughput_per_number or {}),
            pair_burst=pair_burst,
            pair_interval=pair_interval,
            media_url_ttl=media_url_ttl,
            media_latency=media_latency,
        )
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._ids = itertools.count(1)
        self._run_tag = secrets.token_hex(3).upper()
        self._media: dict[str, _Media] = {}
        self._media_urls: dict[str, tuple[str, float]] = {}
        self._media_failures: list[_Failure] = []
        self._reset_state()

    # -- lifecycle ---------------------------------------------------------

    def start(self) -> GraphApiStandIn:
        server = _Server((self.host, self.port), _Handler)
        server.standin = self
        self._server = server
        self.port = server.server_address[1]
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"graph-standin:{self.port}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def serve_forever(self) -> None:
        """Process mode: run in the calling thread until interrupted."""
        server = _Server((self.host, self.port), _Handler)
        server.standin = self
        self._server = server
        self.port = server.server_address[1]
        print(f"GRAPH_STANDIN_LISTENING {self.base_url}", flush=True)
        try:
            server.serve_forever(poll_interval=0.05)
        finally:
            server.server_close()

    def __enter__(self) -> GraphApiStandIn:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def origin(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        return f"{self.origin}/{self.version}"

    # -- configuration and switches ----------------------------------------

    def configure(self, **changes: Any) -> None:
        """Change any ``GraphConfig`` field while running (e.g. ``latency=0``)."""
        with self._lock:
            for name, value in changes.items():
                if not hasattr(self.config, name):
                    raise TypeError(f"unknown stand-in setting {name!r}")
                setattr(self.config, name, value)

    def set_throughput(self, phone_number_id: str, per_second: int | None) -> None:
        """A per-number limit (``None``: unlimited) overriding ``throughput``."""
        with self._lock:
            self.config.throughput_per_number[phone_number_id] = per_second

    def force_error(
        self,
        code: int = 130429,
        *,
        for_seconds: float | None = None,
        count: int | None = None,
        phone_number_id: str | None = None,
        http_status: int | None = None,
    ) -> None:
        """Answer sends with ``code`` for a while, for ``count`` sends, or until
        ``clear_failures()``; optionally only for one phone_number_id."""
        until = None if for_seconds is None else time.monotonic() + for_seconds
        failure = _Failure(code, until, count, phone_number_id, http_status)
        with self._lock:
            self._forced.append(failure)

    def fail_recipient(
        self, recipient: str, code: int = 131026, *, count: int | None = None
    ) -> None:
        """Sends to ``recipient`` (phone digits or BSUID) fail with ``code``."""
        with self._lock:
            self._recipient_failures[_normalise(recipient)] = _Failure(
                code, remaining=count
            )

    def clear_failures(self) -> None:
        with self._lock:
            self._forced.clear()
            self._recipient_failures.clear()
            self._media_failures.clear()

    def add_media(
        self,
        media_id: str,
        content: bytes,
        mime_type: str = "image/jpeg",
        *,
        announced_size: int | None = None,
        served_mime_type: str | None = None,
    ) -> None:
        """Register media. ``announced_size`` smaller than the content makes the
        download bigger than announced; ``served_mime_type`` makes the download's
        Content-Type differ from the announced ``mime_type``."""
        media = _Media(
            content=content,
            mime_type=mime_type,
            announced_size=len(content) if announced_size is None else announced_size,
            served_mime_type=served_mime_type or mime_type,
            sha256=hashlib.sha256(content).hexdigest(),
        )
        with self._lock:
            self._media[media_id] = media

    def delete_media(self, media_id: str) -> None:
        with self._lock:
            self._media.pop(media_id, None)

    def fail_media_lookups(
        self, count: int = 1, code: int = 2, *, http_status: int | None = 500
    ) -> None:
        """The next ``count`` ``GET /{media_id}`` answer a transient error."""
        with self._lock:
            self._media_failures.append(
                _Failure(code, remaining=count, http_status=http_status)
            )

    # -- the record ---------------------------------------------------------

    def reset(self) -> None:
        """Forget requests, sends, limiter state and failure switches."""
        with self._lock:
            self._reset_state()
            self._media_failures.clear()

    def _reset_state(self) -> None:
        self._requests: list[RequestRecord] = []
        self._accepted: list[SendRecord] = []
        self._windows: dict[str, deque[float]] = {}
        self._pairs: dict[tuple[str, str], tuple[float, float]] = {}
        self._forced: list[_Failure] = []
        self._recipient_failures: dict[str, _Failure] = {}
        self._in_flight = 0
        self.max_in_flight = 0

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    @property
    def accepted(self) -> list[SendRecord]:
        with self._lock:
            return list(self._accepted)

    @property
    def rejected(self) -> list[RequestRecord]:
        """Send requests that were answered with an error."""
        with self._lock:
            return [r for r in self._requests if r.status >= 400 and _is_send(r)]

    def sends_to(self, recipient: str) -> list[SendRecord]:
        key = _normalise(recipient)
        return [s for s in self.accepted if s.recipient == key]

    def max_accepted_in_any_window(
        self, phone_number_id: str, seconds: float = 1.0
    ) -> int:
        times = sorted(
            s.at for s in self.accepted if s.phone_number_id == phone_number_id
        )
        return max_in_window(times, seconds)

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "accepted": [asdict(s) for s in self._accepted],
                "requests": [asdict(r) for r in self._requests],
                "max_in_flight": self.max_in_flight,
            }

    def _sleep_in_flight(self, delay: float) -> None:
        """Simulated latency, counting how many sends wait at the same time."""
        with self._lock:
            self._in_flight += 1
            self.max_in_flight = max(self.max_in_flight, self._in_flight)
        try:
            time.sleep(delay)
        finally:
            with self._lock:
                self._in_flight -= 1

    # -- request handling (called from handler threads) ---------------------

    def admit_send(
        self, phone_number_id: str, authorization: str | None, raw: bytes
    ) -> tuple[int, dict[str, Any], float]:
        """Decide a send on arrival; returns (status, body, seconds to wait)."""
        now = time.monotonic()
        payload: Any = None
        recipient: str | None = None
        status, body = self._check_auth(authorization)
        if status == 200:
            payload, recipient, status, body = _validate_send(raw)
        with self._lock:
            config = self.config
            if status == 200:
                status, body = self._limits_and_failures(
                    now, phone_number_id, recipient or "", payload
                )
            if status == 200:
                wamid = self._wamid(recipient or "")
                body["messages"][0]["id"] = wamid
                self._accepted.append(
                    SendRecord(now, phone_number_id, recipient or "", payload, wamid)
                )
            error = body.get("error") if status >= 400 else None
            self._requests.append(
                RequestRecord(
                    at=now,
                    method="POST",
                    path=f"/{self.version}/{phone_number_id}/messages",
                    status=status,
                    phone_number_id=phone_number_id,
                    recipient=recipient,
                    error_code=error["code"] if error else None,
                    payload=payload,
                )
            )
            delay = config.latency
            if config.jitter:
                delay += random.uniform(-config.jitter, config.jitter)
        return status, body, max(delay, 0.0)

    def _check_auth(self, authorization: str | None) -> tuple[int, dict[str, Any]]:
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or token.strip() != self.config.token:
            return error_envelope(190, message=INVALID_TOKEN_MESSAGE)
        return 200, {}

    def _limits_and_failures(
        self, now: float, phone_number_id: str, recipient: str, payload: dict
    ) -> tuple[int, dict[str, Any]]:
        for failure in self._forced:
            if failure.live(now) and failure.phone_number_id in (None, phone_number_id):
                failure.consume()
                return error_envelope(failure.code, http_status=failure.http_status)
        self._forced = [f for f in self._forced if f.live(now)]
        failure = self._recipient_failures.get(recipient)
        if failure is not None and failure.live(now):
            failure.consume()
            return error_envelope(failure.code)

        config = self.config
        limit = config.throughput_per_number.get(phone_number_id, config.throughput)
        window = self._windows.setdefault(phone_number_id, deque())
        while window and window[0] <= now - 1.0:
            window.popleft()
        if limit is not None and len(window) >= limit:
            return error_envelope(130429)

        if config.pair_burst is not None:
            key = (phone_number_id, recipient)
            tokens, last = self._pairs.get(key, (float(config.pair_burst), now))
            tokens = min(
                float(config.pair_burst),
                tokens + (now - last) / max(config.pair_interval, 1e-9),
            )
            if tokens < 1.0:
                self._pairs[key] = (tokens, now)
                return error_envelope(131056)
            self._pairs[key] = (tokens - 1.0, now)

        window.append(now)
        return 200, _success_body(payload)

    def _wamid(self, recipient: str) -> str:
        serial = f"{self._run_tag}{next(self._ids):012X}"
        digits = re.sub(r"\D", "", recipient)[:15] or "0"
        raw = (
            b"\x1c\x18"
            + bytes([len(digits)])
            + digits.encode()
            + b"\x15\x02\x00\x11\x18\x12"
            + serial.encode()
            + b"\x00"
        )
        return "wamid." + base64.b64encode(raw).decode()

    def record_request(self, method: str, path: str, status: int) -> None:
        with self._lock:
            self._requests.append(RequestRecord(time.monotonic(), method, path, status))

    def media_lookup(
        self, media_id: str, authorization: str | None
    ) -> tuple[int, dict[str, Any]]:
        status, body = self._check_auth(authorization)
        if status != 200:
            return status, body
        with self._lock:
            for failure in self._media_failures:
                if failure.live(time.monotonic()):
                    failure.consume()
                    return error_envelope(failure.code, http_status=failure.http_status)
            media = self._media.get(media_id)
            if media is None:
                return object_missing_error(media_id)
            nonce = secrets.token_urlsafe(12)
            expires = time.monotonic() + self.config.media_url_ttl
            self._media_urls[nonce] = (media_id, expires)
        query = urllib.parse.urlencode({"mid": media_id, "token": nonce})
        return 200, {
            "messaging_product": "whatsapp",
            "url": f"{self.origin}/_media/{media_id}?{query}",
            "mime_type": media.mime_type,
            "sha256": media.sha256,
            "file_size": media.announced_size,
            "id": media_id,
        }

    def media_download(
        self, media_id: str, nonce: str, authorization: str | None
    ) -> tuple[int, str, bytes]:
        status, body = self._check_auth(authorization)
        if status != 200:
            return status, "application/json", json.dumps(body).encode()
        with self._lock:
            grant = self._media_urls.get(nonce)
            media = self._media.get(media_id)
        if (
            grant is None
            or grant[0] != media_id
            or time.monotonic() >= grant[1]
            or media is None
        ):
            return 404, "text/plain", b"URL signature expired"
        return 200, media.served_mime_type, media.content


def max_in_window(times: list[float], seconds: float) -> int:
    """Most events in any half-open window ``[t, t + seconds)``; times sorted."""
    best = 0
    for i, start in enumerate(times):
        best = max(best, bisect.bisect_left(times, start + seconds, lo=i) - i)
    return best


def _is_send(record: RequestRecord) -> bool:
    return record.method == "POST" and record.path.endswith("/messages")


def _normalise(recipient: str) -> str:
    if BSUID_RE.match(recipient):
        return recipient
    return re.sub(r"\D", "", recipient)


def _success_body(payload: dict[str, Any]) -> dict[str, Any]:
    if payload.get("to"):
        contact = {"input": payload["to"], "wa_id": _normalise(payload["to"])}
    else:
        contact = {"input": payload["recipient"], "user_id": payload["recipient"]}
    message: dict[str, Any] = {"id": ""}
    if payload.get("type") == "template":
        message["message_status"] = "accepted"
    return {
        "messaging_product": "whatsapp",
        "contacts": [contact],
        "messages": [message],
    }


class _InvalidSend(Exception):
    def __init__(self, details: str, message: str = "(#100) Invalid parameter"):
        super().__init__(details)
        self.details = details
        self.message = message


def _required(name: str) -> _InvalidSend:
    text = f"The parameter {name} is required."
    return _InvalidSend(text, f"(#100) {text}")


def _validate_send(raw: bytes) -> tuple[Any, str | None, int, dict[str, Any]]:
    """(payload, recipient key, status, error body); status 200 when valid."""
    payload: Any = None
    recipient: str | None = None
    try:
        try:
            payload = json.loads(raw or b"{}")
        except ValueError:
            raise _InvalidSend("Request body is not valid JSON") from None
        recipient = _check_send(payload)
    except _InvalidSend as invalid:
        return payload, recipient, *param_error(invalid.details, invalid.message)
    return payload, recipient, 200, {}


def _check_send(payload: Any) -> str:
    """The recipient key of a valid send body; raises ``_InvalidSend``."""
    if not isinstance(payload, dict):
        raise _InvalidSend("Request body must be a JSON object")
    if "messaging_product" not in payload:
        raise _required("messaging_product")
    if payload["messaging_product"] != "whatsapp":
        raise _InvalidSend(
            "Param messaging_product must be one of {WHATSAPP} - got "
            f'"{payload["messaging_product"]}".'
        )
    to, bsuid = payload.get("to"), payload.get("recipient")
    if to:
        if not isinstance(to, str) or len(re.sub(r"\D", "", to)) < 5:
            raise _InvalidSend("Invalid parameter: to")
        recipient = _normalise(to)
    elif bsuid:
        if not isinstance(bsuid, str) or not BSUID_RE.match(bsuid):
            raise _InvalidSend("Invalid parameter: recipient")
        recipient = bsuid
    else:
        raise _required("to")
    kind = payload.get("type", "text")
    if kind not in MESSAGE_TYPES:
        raise _InvalidSend(
            f"Param type must be one of {{{', '.join(sorted(MESSAGE_TYPES))}}} - "
            f'got "{kind}".'
        )
    content = payload.get(kind)
    if not isinstance(content, dict):
        raise _required(kind)
    if kind == "text" and not content.get("body"):
        raise _required("text['body']")
    if kind == "template":
        if not content.get("name"):
            raise _required("template['name']")
        language = content.get("language")
        if not (isinstance(language, dict) and language.get("code")):
            raise _required("template['language']['code']")
    return recipient


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 2048
    standin: GraphApiStandIn


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server
    server_version = "GraphApiStandIn/1.0"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

    def _read_body(self) -> bytes:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _send(
        self, status: int, body: bytes, content_type: str = "application/json"
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, body: Any) -> None:
        self._send(status, json.dumps(body).encode())

    def do_POST(self) -> None:  # noqa: N802
        standin = self.server.standin
        raw = self._read_body()
        path = urllib.parse.urlsplit(self.path).path
        parts = path.strip("/").split("/")
        if parts[0] == "_standin":
            self._control("POST", parts[1:], raw)
            return
        if len(parts) == 3 and parts[2] == "messages":
            status, body, delay = standin.admit_send(
                parts[1], self.headers.get("Authorization"), raw
            )
            standin._sleep_in_flight(delay)
            self._send_json(status, body)
            return
        standin.record_request("POST", path, 400)
        self._send_json(*object_missing_error(parts[-1]))

    def do_GET(self) -> None:  # noqa: N802
        standin = self.server.standin
        split = urllib.parse.urlsplit(self.path)
        parts = split.path.strip("/").split("/")
        auth = self.headers.get("Authorization")
        if parts[0] == "_standin":
            self._control("GET", parts[1:], b"")
            return
        if parts[0] == "_media" and len(parts) == 2:
            nonce = urllib.parse.parse_qs(split.query).get("token", [""])[0]
            status, content_type, body = standin.media_download(parts[1], nonce, auth)
            standin.record_request("GET", split.path, status)
            self._send(status, body, content_type)
            return
        if len(parts) == 2:
            if standin.config.media_latency:
                time.sleep(standin.config.media_latency)
            status, answer = standin.media_lookup(parts[1], auth)
            standin.record_request("GET", split.path, status)
            self._send_json(status, answer)
            return
        standin.record_request("GET", split.path, 400)
        self._send_json(*object_missing_error(parts[-1]))

    def do_DELETE(self) -> None:  # noqa: N802
        standin = self.server.standin
        parts = urllib.parse.urlsplit(self.path).path.strip("/").split("/")
        status, body = standin._check_auth(self.headers.get("Authorization"))
        if status == 200 and len(parts) == 2:
            standin.delete_media(parts[1])
            body = {"success": True}
        self._send_json(status, body)

    def _control(self, method: str, parts: list[str], raw: bytes) -> None:
        """Process-mode control plane: not recorded, no token needed."""
        try:
            self._dispatch_control(method, parts[0] if parts else "", raw)
        except (TypeError, ValueError, KeyError) as exc:
            self._send_json(400, {"error": repr(exc)})

    def _dispatch_control(self, method: str, action: str, raw: bytes) -> None:
        standin = self.server.standin
        args = json.loads(raw) if raw else {}
        if method == "GET" and action in ("sends", "requests"):
            snapshot = standin.snapshot()
            key = "accepted" if action == "sends" else "requests"
            self._send_json(200, snapshot[key])
        elif method == "GET" and action == "stats":
            snapshot = standin.snapshot()
            self._send_json(
                200,
                {
                    "accepted": len(snapshot["accepted"]),
                    "requests": len(snapshot["requests"]),
                    "max_in_flight": snapshot["max_in_flight"],
                },
            )
        elif method == "GET" and action == "config":
            self._send_json(200, asdict(standin.config))
        elif method == "POST" and action == "reset":
            standin.reset()
            self._send_json(200, {"ok": True})
        elif method == "POST" and action == "config":
            standin.configure(**args)
            self._send_json(200, asdict(standin.config))
        elif method == "POST" and action == "force_error":
            standin.force_error(**args)
            self._send_json(200, {"ok": True})
        elif method == "POST" and action == "fail_recipient":
            standin.fail_recipient(**args)
            self._send_json(200, {"ok": True})
        elif method == "POST" and action == "clear_failures":
            standin.clear_failures()
            self._send_json(200, {"ok": True})
        elif method == "POST" and action == "media":
            content = base64.b64decode(args.pop("content_b64"))
            standin.add_media(content=content, **args)
            self._send_json(200, {"ok": True})
        elif method == "POST" and action == "fail_media_lookups":
            standin.fail_media_lookups(**args)
            self._send_json(200, {"ok": True})
        else:
            self._send_json(404, {"error": f"unknown control {method} {action}"})


class GraphApiClient:
    """Reads and steers a stand-in running in another process.

    ``base_url`` is what the server printed (``http://127.0.0.1:PORT/v21.0``)
    or just its origin. Record entries come back as dicts with the fields of
    ``SendRecord`` / ``RequestRecord``.
    """

    def __init__(self, base_url: str, *, timeout: float = 10.0):
        split = urllib.parse.urlsplit(base_url)
        self.origin = f"{split.scheme}://{split.netloc}"
        self.timeout = timeout

    def _call(self, method: str, action: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.origin}/_standin/{action}",
            data=data,
            method=method,
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=self.timeout) as response:
            return json.loads(response.read())

    def wait_ready(self, deadline_seconds: float = 10.0) -> None:
        deadline = time.monotonic() + deadline_seconds
        while True:
            try:
                self._call("GET", "config")
                return
            except (OSError, urllib.error.URLError):
                if time.monotonic() >= deadline:
                    raise
                time.sleep(0.02)

    def accepted(self) -> list[dict[str, Any]]:
        return self._call("GET", "sends")

    def requests(self) -> list[dict[str, Any]]:
        return self._call("GET", "requests")

    def rejected(self) -> list[dict[str, Any]]:
        return [
            r
            for r in self.requests()
            if r["status"] >= 400
            and r["method"] == "POST"
            and r["path"].endswith("/messages")
        ]

    def sends_to(self, recipient: str) -> list[dict[str, Any]]:
        key = _normalise(recipient)
        return [s for s in self.accepted() if s["recipient"] == key]

    def max_accepted_in_any_window(
        self, phone_number_id: str, seconds: float = 1.0
    ) -> int:
        times = sorted(
            s["at"] for s in self.accepted() if s["phone_number_id"] == phone_number_id
        )
        return max_in_window(times, seconds)

    def stats(self) -> dict[str, int]:
        """Counts only (cheap for long benches): accepted, requests, max_in_flight."""
        return self._call("GET", "stats")

    def reset(self) -> None:
        self._call("POST", "reset", {})

    def configure(self, **changes: Any) -> dict[str, Any]:
        return self._call("POST", "config", changes)

    def config(self) -> dict[str, Any]:
        return self._call("GET", "config")

    def force_error(self, code: int = 130429, **kwargs: Any) -> None:
        self._call("POST", "force_error", {"code": code, **kwargs})

    def fail_recipient(self, recipient: str, code: int = 131026, **kwargs) -> None:
        self._call(
            "POST", "fail_recipient", {"recipient": recipient, "code": code, **kwargs}
        )

    def clear_failures(self) -> None:
        self._call("POST", "clear_failures", {})

    def add_media(
        self, media_id: str, content: bytes, mime_type: str = "image/jpeg", **kwargs
    ) -> None:
        body = {
            "media_id": media_id,
            "content_b64": base64.b64encode(content).decode(),
            "mime_type": mime_type,
            **kwargs,
        }
        self._call("POST", "media", body)

    def fail_media_lookups(self, count: int = 1, code: int = 2, **kwargs) -> None:
        self._call(
            "POST", "fail_media_lookups", {"count": count, "code": code, **kwargs}
        )


def _optional_int(value: str) -> int | None:
    return None if value.lower() in ("none", "off", "0") else int(value)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.graph_api", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--version", default=DEFAULT_VERSION)
    parser.add_argument("--token", default=DEFAULT_TOKEN)
    parser.add_argument("--latency", type=float, default=0.15)
    parser.add_argument("--jitter", type=float, default=0.0)
    parser.add_argument(
        "--throughput",
        type=_optional_int,
        default=META_THROUGHPUT_PER_SECOND,
        help="accepted sends per phone_number_id per sliding second; 0/off: none",
    )
    parser.add_argument(
        "--pair-burst",
        type=_optional_int,
        default=META_PAIR_BURST,
        help="pair-limit bucket size; 0/off disables the pair limit",
    )
    parser.add_argument(
        "--pair-interval", type=float, default=META_PAIR_INTERVAL_SECONDS
    )
    parser.add_argument("--media-url-ttl", type=float, default=MEDIA_URL_TTL_SECONDS)
    args = parser.parse_args(argv)
    standin = GraphApiStandIn(
        host=args.host,
        port=args.port,
        version=args.version,
        token=args.token,
        latency=args.latency,
        jitter=args.jitter,
        throughput=args.throughput,
        pair_burst=args.pair_burst,
        pair_interval=args.pair_interval,
        media_url_ttl=args.media_url_ttl,
    )
    try:
        standin.serve_forever()
    except KeyboardInterrupt:
        sys.exit(0)


if __name__ == "__main__":
    main()
