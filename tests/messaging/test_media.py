"""Inbound media downloaded from the local Graph API stand-in, stored through
Django's storage, checked, and served to the salon's owner only."""

import base64
import hashlib
import json
import os

import pytest
from django.core.files.storage import default_storage
from django.test import Client

from messaging import media
from messaging.models import Message
from queues.definitions import MEDIA, RetryableJobError
from tests.conftest import client_for
from tests.factories import ConversationFactory, MessageFactory, SalonFactory
from tests.graph_api import GraphApiStandIn
from tests.messaging.conftest import (
    SALON_PHONE_NUMBER_ID,
    post_webhook,
    webhook_envelope,
)
from tests.utils import wait_until

TOKEN = "test-token"
PHOTO = b"\xff\xd8\xff\xe0" + b"fake jpeg bytes " * 200
MEDIA_ID = "2130857345626467"


def b64_sha256(content: bytes) -> str:
    return base64.b64encode(hashlib.sha256(content).digest()).decode()


@pytest.fixture
def graph():
    with GraphApiStandIn(token=TOKEN, latency=0.0) as standin:
        yield standin


@pytest.fixture
def media_settings(settings, graph, tmp_path):
    settings.WHATSAPP_API_BASE_URL = graph.base_url
    settings.WHATSAPP_ACCESS_TOKEN = TOKEN
    settings.MEDIA_ROOT = str(tmp_path / "media")
    return settings


@pytest.fixture
def owner_salon(user):
    return SalonFactory(owner=user, whatsapp_phone_number_id=SALON_PHONE_NUMBER_ID)


def image_message(salon, *, content: bytes = PHOTO, **extra) -> Message:
    return MessageFactory(
        conversation=ConversationFactory(salon=salon),
        type=extra.pop("type", "image"),
        body="the colour I'd like",
        content={
            "id": MEDIA_ID,
            "mime_type": "image/jpeg",
            "sha256": b64_sha256(content),
            **extra,
        },
        media_status=Message.MediaStatus.PENDING,
    )


def download(message: Message, *, final_attempt: bool = False) -> Message:
    return media.message_media_download(
        message_id=message.pk, final_attempt=final_attempt
    )


@pytest.mark.django_db
def test_a_photo_is_downloaded_stored_and_hashed(media_settings, graph, owner_salon):
    graph.add_media(MEDIA_ID, PHOTO, "image/jpeg")
    message = download(image_message(owner_salon))
    assert message.media_status == "stored"
    assert message.media_mime_type == "image/jpeg"
    assert message.media_size == len(PHOTO)
    assert message.media_sha256 == hashlib.sha256(PHOTO).hexdigest()
    assert message.media_file.name.endswith(".jpg")
    with default_storage.open(message.media_file.name, "rb") as stored:
        assert stored.read() == PHOTO
    downloads = [r for r in graph.requests if r.path.startswith("/_media/")]
    assert len(downloads) == 1
    # Done: a second job (a redelivery, a re-drive) downloads nothing more.
    assert download(message).media_status == "stored"
    assert len([r for r in graph.requests if r.path.startswith("/_media/")]) == 1


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("setup", "reason"),
    [
        (dict(content=b"x" * (5 * 1024 * 1024 + 1)), "over Meta's"),
        (dict(content=PHOTO, announced_size=100), "100 bytes allowed"),
        (dict(content=PHOTO, served_mime_type="text/html"), "'text/html'"),
        (dict(content=PHOTO, mime_type="image/gif"), "does not match"),
        (dict(content=PHOTO, tamper=True), "SHA-256"),
    ],
    ids=["over-limit", "larger-than-announced", "served-as-html", "gif", "hash"],
)
def test_a_file_that_is_not_what_was_announced_is_refused(
    media_settings, graph, owner_salon, setup, reason
):
    content = setup.pop("content")
    tamper = setup.pop("tamper", False)
    mime_type = setup.pop("mime_type", "image/jpeg")
    graph.add_media(MEDIA_ID, content, mime_type, **setup)
    message = image_message(owner_salon, content=PHOTO if tamper else content)
    if tamper:
        graph.add_media(MEDIA_ID, PHOTO + b"!", "image/jpeg")
    message = download(message)
    assert message.media_status == "refused"
    assert reason in message.media_error
    assert not message.media_file
    assert not any(files for _, _, files in os.walk(media_settings.MEDIA_ROOT))


@pytest.mark.django_db
def test_a_graph_error_is_retried_then_downloads(media_settings, graph, owner_salon):
    graph.add_media(MEDIA_ID, PHOTO, "image/jpeg")
    graph.fail_media_lookups(count=1, code=2)
    message = image_message(owner_salon)
    with pytest.raises(RetryableJobError):
        download(message)
    message.refresh_from_db()
    assert message.media_status == "pending"
    assert download(message).media_status == "stored"


@pytest.mark.django_db
def test_the_last_attempt_records_the_failure(media_settings, graph, owner_salon):
    graph.fail_media_lookups(count=5, code=131000)
    message = download(image_message(owner_salon), final_attempt=True)
    assert message.media_status == "failed" and "131000" in message.media_error


@pytest.mark.django_db
def test_a_media_id_meta_no_longer_has_is_gone_at_once(
    media_settings, graph, owner_salon
):
    message = download(image_message(owner_salon))  # never added: unknown id
    assert message.media_status == "gone"
    assert "no longer has" in message.media_error


@pytest.mark.django_db
def test_an_expired_url_is_retried_with_a_fresh_one(media_settings, graph, owner_salon):
    graph.add_media(MEDIA_ID, PHOTO, "image/jpeg")
    graph.configure(media_url_ttl=0.0)  # every URL has expired when used
    message = image_message(owner_salon)
    with pytest.raises(RetryableJobError, match="404"):
        download(message)
    graph.configure(media_url_ttl=300.0)
    assert download(message).media_status == "stored"


@pytest.mark.django_db
def test_owner_and_staff_get_the_file_others_get_404(
    media_settings, graph, owner_salon, user, other_user, staff_user
):
    graph.add_media(MEDIA_ID, PHOTO, "image/jpeg")
    message = download(image_message(owner_salon))
    url = f"/api/messages/{message.pk}/media/"

    response = client_for(user).get(url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == PHOTO
    assert response["Content-Type"] == "image/jpeg"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Content-Disposition"].startswith("attachment")
    assert client_for(staff_user).get(url).status_code == 200
    assert client_for(other_user).get(url).status_code == 404
    assert Client().get(url).status_code == 401
    listed = client_for(user).get(
        f"/api/conversations/{message.conversation_id}/messages/"
    )
    (row,) = listed.json()["results"]
    assert row["media_url"] == url and row["media_sha256"] == message.media_sha256


@pytest.mark.django_db
def test_no_media_is_404(auth_client, owner_salon):
    text = MessageFactory(conversation=ConversationFactory(salon=owner_salon))
    pending = image_message(owner_salon)
    for message in (text, pending):
        assert auth_client.get(f"/api/messages/{message.pk}/media/").status_code == 404


@pytest.mark.django_db
def test_admin_shows_images_inline(media_settings, graph, owner_salon, staff_user):
    graph.add_media(MEDIA_ID, PHOTO, "image/jpeg")
    message = download(image_message(owner_salon))
    client = Client()
    client.force_login(staff_user)
    page = client.get(f"/admin/messaging/message/{message.pk}/change/").content
    media_url = f"/admin/messaging/message/{message.pk}/media/"
    assert f'<img src="{media_url}"'.encode() in page
    response = client.get(media_url)
    assert response.status_code == 200
    assert b"".join(response.streaming_content) == PHOTO


def image_webhook(wamid: str, media_id: str, content: bytes) -> dict:
    return webhook_envelope(
        {
            "contacts": [{"profile": {"name": "Priya"}, "wa_id": "16505559876"}],
            "messages": [
                {
                    "from": "16505559876",
                    "id": wamid,
                    "timestamp": "1781000120",
                    "type": "image",
                    "image": {
                        "id": media_id,
                        "mime_type": "image/jpeg",
                        "sha256": b64_sha256(content),
                    },
                }
            ],
        }
    )


@pytest.mark.django_db(transaction=True)
def test_a_webhook_photo_is_downloaded_by_the_media_worker_with_retries(
    owner_salon, graph, start_worker, tmp_path
):
    """Through the broker: the webhook's drain publishes a job on
    whatsapp:media; a media worker downloads it (retrying a Graph error with
    backoff) while a gone media id stops at once."""
    graph.add_media("111", PHOTO, "image/jpeg")
    graph.fail_media_lookups(count=1, code=2)  # the first lookup fails
    client = Client()
    for wamid, media_id in (("wamid.P1", "111"), ("wamid.P2", "222")):
        response = post_webhook(client, image_webhook(wamid, media_id, PHOTO))
        assert response.status_code == 200
    env = {
        "WHATSAPP_API_BASE_URL": graph.base_url,
        "WHATSAPP_ACCESS_TOKEN": TOKEN,
        "MEDIA_ROOT": str(tmp_path / "media"),
    }
    start_worker("whatsapp:webhook")
    start_worker(MEDIA.name, env=env, pool="threads", concurrency=2)

    def media_of(wamid: str) -> str:
        message = Message.objects.filter(wamid=wamid).first()
        return message.media_status if message else ""

    wait_until(
        lambda: media_of("wamid.P1") == "stored" and media_of("wamid.P2") == "gone",
        timeout=60,
        message="photo stored, unknown media id gone",
    )
    stored = Message.objects.get(wamid="wamid.P1")
    assert (tmp_path / "media" / stored.media_file.name).read_bytes() == PHOTO
    # The transient failure hit one of the two lookups, which was retried with
    # backoff; the gone id (400, subcode 33) was asked once and never again.
    lookups = [r.status for r in graph.requests if r.path.startswith("/v21.0/")]
    assert sorted(lookups) == [200, 400, 500]
    assert json.loads(json.dumps(stored.content))["id"] == "111"


@pytest.mark.django_db
def test_beat_requeues_media_still_pending(owner_salon):
    from datetime import timedelta

    from django.utils import timezone

    from saas.redis import queue_redis

    stale = image_message(owner_salon)
    Message.objects.filter(pk=stale.pk).update(
        created_at=timezone.now() - timedelta(minutes=10)
    )
    fresh = image_message(owner_salon)
    assert media.messages_media_redrive(older_than=timedelta(minutes=2)) == [stale.pk]
    # Re-driven once per period, not at every beat.
    assert media.messages_media_redrive(older_than=timedelta(minutes=2)) == []
    jobs = [
        json.loads(raw)
        for key in queue_redis().keys(f"{MEDIA.name}*")
        for raw in queue_redis().lrange(key, 0, -1)
    ]
    assert [job["headers"]["task"] for job in jobs] == [
        media.MESSAGE_MEDIA_DOWNLOAD_TASK
    ]
    assert str(stale.pk) in jobs[0]["headers"]["kwargsrepr"]
    assert str(fresh.pk) not in jobs[0]["headers"]["kwargsrepr"]
