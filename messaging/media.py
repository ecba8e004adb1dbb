"""Inbound media (photos, voice notes, videos, documents, stickers), downloaded
on ``whatsapp:media`` before Meta's URL expires, and stored through Django's
storage API (``STORAGES["default"]``: var/media by default, S3 or any other
backend by configuration).

The webhook carries a media id only. The job asks the Graph API for the
media's URL (``GET {base}/{media_id}``, valid for minutes), streams the file
with the access token, and checks it against Meta's per-type size limits, the
size and MIME type Meta announced and the SHA-256 it gave. A file that fails
a check is refused with the reason on the message; nothing is executed or
rendered from it. A media id Meta no longer has is recorded as gone; network
and Graph API errors retry with the queue's backoff.
"""

import base64
import hashlib
import logging
import mimetypes
import tempfile
from datetime import timedelta
from functools import cache
from typing import Any

import httpx
from django.conf import settings
from django.core.files import File
from django.core.files.storage import default_storage
from django.db import transaction

from messaging.models import Message
from messaging.services import messages_changed_on_commit
from messaging.whatsapp import classify_graph_error
from queues.definitions import MEDIA, RetryableJobError
from queues.publish import job_publish
from saas.services import rows_claim_for_redrive

logger = logging.getLogger(__name__)

#: The job of whatsapp:media (messaging/tasks.py), published by name.
MESSAGE_MEDIA_DOWNLOAD_TASK = "messaging.message_media_download"

MB = 1024 * 1024
#: Meta's limits per media type (Cloud API "Supported media types").
MEDIA_MAX_BYTES = {
    "audio": 16 * MB,
    "document": 100 * MB,
    "image": 5 * MB,
    "sticker": 500 * 1024,  # animated; static stickers are 100 KB
    "video": 16 * MB,
}
#: MIME types a message of each type may carry (None: any, e.g. documents).
MEDIA_MIME_PREFIXES: dict[str, tuple[str, ...] | None] = {
    "audio": ("audio/",),
    "document": None,
    "image": ("image/jpeg", "image/png"),
    "sticker": ("image/webp",),
    "video": ("video/",),
}
CHUNK_BYTES = 64 * 1024


def media_downloads_publish(message_ids: list) -> None:
    """A download job per media message; call it after commit (Meta's URLs
    expire within minutes). A duplicate delivery's id names no row: its job
    does nothing. A publish that fails leaves the message pending for beat."""
    for message_id in message_ids:
        job_publish(
            MESSAGE_MEDIA_DOWNLOAD_TASK,
            queue=MEDIA,
            durable=f"Media of message {message_id}",
            kwargs={"message_id": str(message_id)},
        )


def messages_media_redrive(*, older_than: timedelta, limit: int = 500) -> list:
    """Publish again the downloads of media still pending ``older_than`` after
    the message (their publish failed, or their job was lost). A second job
    for the same message stores nothing twice."""
    ids = [
        message.pk
        for message in rows_claim_for_redrive(
            Message.objects.filter(media_status=Message.MediaStatus.PENDING).only("pk"),
            stale_field="created_at",
            older_than=older_than,
            order_by="created_at",
            limit=limit,
        )
    ]
    if ids:
        logger.warning("Re-driving %d pending media downloads", len(ids))
        media_downloads_publish(ids)
    return ids


class MediaRefused(Exception):
    """The file is not what was announced, or over Meta's limit."""


class MediaGone(Exception):
    """Meta no longer has this media id."""


@cache
def _http() -> httpx.Client:
    timeout = settings.WHATSAPP_HTTP_TIMEOUT_SECONDS
    return httpx.Client(
        timeout=httpx.Timeout(timeout, connect=min(timeout, 5.0)),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        follow_redirects=False,
    )


def _mime(value: Any) -> str:
    return str(value or "").split(";")[0].strip().lower()


def message_media_download(*, message_id, final_attempt: bool) -> Message | None:
    """Download and store the media of an inbound message, once.

    Raises RetryableJobError on a transient failure until ``final_attempt``,
    which records the media as failed instead.
    """
    message = Message.objects.filter(pk=message_id).first()
    if message is None or message.media_status != Message.MediaStatus.PENDING:
        return message  # a duplicate delivery's job, or done already
    try:
        name, mime_type, size, digest = _media_fetch_and_store(message)
    except MediaGone as exc:
        return _media_finish(message, Message.MediaStatus.GONE, media_error=str(exc))
    except MediaRefused as exc:
        logger.warning("Media of message %s refused: %s", message.pk, exc)
        return _media_finish(message, Message.MediaStatus.REFUSED, media_error=str(exc))
    except RetryableJobError as exc:
        if not final_attempt:
            raise
        return _media_finish(message, Message.MediaStatus.FAILED, media_error=str(exc))
    finished = _media_finish(
        message,
        Message.MediaStatus.STORED,
        media_file=name,
        media_mime_type=mime_type,
        media_size=size,
        media_sha256=digest,
    )
    if finished.media_file.name != name:  # another job stored it first
        default_storage.delete(name)
    return finished


def _media_finish(message: Message, status: str, **fields) -> Message:
    with transaction.atomic():
        Message.objects.filter(
            pk=message.pk, media_status=Message.MediaStatus.PENDING
        ).update(media_status=status, **fields)
        messages_changed_on_commit(message.salon_id, [message.conversation_id])
    message.refresh_from_db()
    return message


def _graph_get(url: str, **kwargs) -> httpx.Response:
    token = settings.WHATSAPP_ACCESS_TOKEN
    try:
        return _http().get(url, headers={"Authorization": f"Bearer {token}"}, **kwargs)
    except httpx.HTTPError as exc:
        raise RetryableJobError(f"Graph API unreachable: {exc!r}") from exc


def _media_lookup(media_id: str) -> dict[str, Any]:
    """Meta's answer to ``GET /{media_id}``: url, mime_type, sha256, file_size."""
    base = settings.WHATSAPP_API_BASE_URL.rstrip("/")
    response = _graph_get(f"{base}/{media_id}")
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if response.is_success and isinstance(answer, dict) and answer.get("url"):
        return answer
    error = answer.get("error") if isinstance(answer, dict) else None
    if isinstance(error, dict) and (
        error.get("error_subcode") == 33 or response.status_code == 404
    ):
        raise MediaGone(f"Meta no longer has media {media_id}: {error.get('message')}")
    exc = classify_graph_error(answer, http_status=response.status_code)
    raise RetryableJobError(f"media {media_id}: {exc} (code {exc.code})")


def _media_fetch_and_store(message: Message) -> tuple[str, str, int, str]:
    content = message.content or {}
    media_id = str(content.get("id") or "")
    if not media_id.isdigit():
        raise MediaRefused(f"not a Meta media id: {media_id!r}")
    info = _media_lookup(media_id)
    kind = message.type
    limit = MEDIA_MAX_BYTES.get(kind, MEDIA_MAX_BYTES["document"])
    announced_mime = _mime(info.get("mime_type") or content.get("mime_type"))
    expected_mime = _mime(content.get("mime_type")) or announced_mime
    if announced_mime != expected_mime:
        raise MediaRefused(
            f"MIME type {announced_mime!r} does not match the message's "
            f"{expected_mime!r}"
        )
    prefixes = MEDIA_MIME_PREFIXES.get(kind)
    if prefixes is not None and not announced_mime.startswith(prefixes):
        raise MediaRefused(f"MIME type {announced_mime!r} is not allowed for {kind}")
    try:
        announced_size = int(info.get("file_size"))
    except (TypeError, ValueError):
        announced_size = None
    if announced_size is not None and announced_size > limit:
        raise MediaRefused(
            f"{announced_size} bytes announced, over Meta's {limit} for {kind}"
        )
    cap = min(limit, announced_size) if announced_size is not None else limit
    with tempfile.SpooledTemporaryFile(max_size=2 * MB) as spool:
        size, digest, served_mime = _media_stream(str(info["url"]), spool, cap=cap)
        if served_mime and served_mime != announced_mime:
            raise MediaRefused(
                f"download is {served_mime!r}, {announced_mime!r} was announced"
            )
        _hash_check(digest, info.get("sha256"), content.get("sha256"))
        spool.seek(0)
        extension = mimetypes.guess_extension(announced_mime) or ".bin"
        name = f"whatsapp/{message.salon_id}/{message.pk}{extension}"
        stored_name = default_storage.save(name, File(spool, name=name))
    return stored_name, announced_mime, size, digest.hex()


def _media_stream(url: str, spool, *, cap: int) -> tuple[int, bytes, str]:
    """Stream the download into ``spool``; (size, sha256, Content-Type)."""
    token = settings.WHATSAPP_ACCESS_TOKEN
    digest = hashlib.sha256()
    size = 0
    try:
        with _http().stream(
            "GET", url, headers={"Authorization": f"Bearer {token}"}
        ) as response:
            if response.status_code in (401, 403, 404, 410):
                # An expired URL: the next attempt asks Meta for a fresh one.
                raise RetryableJobError(f"media URL answered {response.status_code}")
            if not response.is_success:
                raise RetryableJobError(f"media download HTTP {response.status_code}")
            served_mime = _mime(response.headers.get("content-type"))
            length = response.headers.get("content-length")
            if length and length.isdigit() and int(length) > cap:
                raise MediaRefused(
                    f"download of {length} bytes, over the {cap} bytes allowed"
                )
            for chunk in response.iter_bytes(CHUNK_BYTES):
                size += len(chunk)
                if size > cap:
                    raise MediaRefused(f"download larger than the {cap} bytes allowed")
                digest.update(chunk)
                spool.write(chunk)
    except httpx.HTTPError as exc:
        raise RetryableJobError(f"media download failed: {exc!r}") from exc
    return size, digest.digest(), served_mime


def _hash_check(digest: bytes, *announced: Any) -> None:
    """Meta gives SHA-256 as hex (media URL answer) or base64 (webhook)."""
    forms = {digest.hex(), base64.b64encode(digest).decode()}
    for value in announced:
        if value and str(value).strip() not in forms:
            raise MediaRefused("SHA-256 of the download does not match Meta's")
