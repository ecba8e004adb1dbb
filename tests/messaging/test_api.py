"""POST /api/conversations/{id}/messages/: 202, sent on whatsapp:outbound by a
real worker through the cloud_api backend against a local Graph API."""

import json
from datetime import timedelta

import pytest
from django.utils import timezone

from messaging.models import Message
from tests.conftest import client_for
from tests.factories import ConversationFactory, SalonFactory
from tests.messaging.conftest import FIXTURES
from tests.utils import wait_until

PHONE = "106540352242922"
PATH = f"/v21.0/{PHONE}/messages"


def send_api(name: str) -> dict:
    return json.loads((FIXTURES / "send_api" / name).read_text())


def url(conversation) -> str:
    return f"/api/conversations/{conversation.pk}/messages/"


@pytest.fixture
def conversation(user):
    salon = SalonFactory(owner=user, whatsapp_phone_number_id=PHONE)
    return ConversationFactory(
        salon=salon,
        customer_wa_id="16505551234",
        last_inbound_at=timezone.now() - timedelta(hours=1),
    )


@pytest.fixture
def cloud_worker(start_worker, httpserver):
    def start():
        return start_worker(
            "whatsapp:outbound",
            env={
                "WHATSAPP_BACKEND": "cloud_api",
                "WHATSAPP_API_BASE_URL": httpserver.url_for("/v21.0"),
                "WHATSAPP_ACCESS_TOKEN": "test-token",
            },
        )

    return start


def status_of(message_id) -> str:
    return Message.objects.get(pk=message_id).status


@pytest.mark.django_db
def test_post_answers_202_with_the_queued_message(auth_client, conversation):
    response = auth_client.post(
        url(conversation), {"text": "See you at 10"}, format="json"
    )
    assert response.status_code == 202
    body = response.json()
    assert body["status"] == "queued" and body["direction"] == "out"
    assert body["body"] == "See you at 10" and body["wamid"] is None
    assert body["conversation"] == str(conversation.pk)


@pytest.mark.django_db
def test_outside_the_window_is_400_saying_use_a_template(auth_client, conversation):
    conversation.last_inbound_at = timezone.now() - timedelta(hours=24, minutes=1)
    conversation.save()
    response = auth_client.post(url(conversation), {"text": "Hi"}, format="json")
    assert response.status_code == 400
    assert "template" in response.json()["text"][0]
    assert not Message.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "payload", [{}, {"text": ""}, {"text": "   "}, {"text": "x" * 4097}]
)
def test_bad_text_is_400(auth_client, conversation, payload):
    response = auth_client.post(url(conversation), payload, format="json")
    assert response.status_code == 400 and "text" in response.json()
    assert not Message.objects.exists()


@pytest.mark.django_db
def test_another_tenants_conversation_is_404(other_client, conversation):
    response = other_client.post(url(conversation), {"text": "Hi"}, format="json")
    assert response.status_code == 404
    assert not Message.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_worker_sends_through_the_graph_api(
    user, conversation, httpserver, cloud_worker
):
    httpserver.expect_request(PATH, method="POST").respond_with_json(
        send_api("response_success_text.json")
    )
    response = client_for(user).post(url(conversation), {"text": "Hi"}, format="json")
    message_id = response.json()["id"]
    cloud_worker()
    wait_until(lambda: status_of(message_id) == "sent", timeout=30)
    message = Message.objects.get(pk=message_id)
    assert message.wamid == "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI2OUUzMDZENTYxRDhEODA3MDMA"
    ((request, _),) = httpserver.log
    assert request.headers["Authorization"] == "Bearer test-token"
    assert request.get_json()["text"]["body"] == "Hi"
    assert request.get_json()["to"] == "16505551234"


@pytest.mark.django_db(transaction=True)
def test_rate_limit_is_retried_with_backoff_then_sent(
    user, conversation, httpserver, cloud_worker
):
    httpserver.expect_ordered_request(PATH).respond_with_json(
        send_api("error_130429_rate_limit.json"), status=400
    )
    httpserver.expect_ordered_request(PATH).respond_with_json(
        send_api("error_131056_pair_rate_limit.json"), status=400
    )
    httpserver.expect_ordered_request(PATH).respond_with_json(
        send_api("response_success_text.json")
    )
    message_id = client_for(user).post(url(conversation), {"text": "Hi"}).json()["id"]
    cloud_worker()
    wait_until(lambda: status_of(message_id) == "sent", timeout=60)
    assert len(httpserver.log) == 3
    httpserver.check_assertions()


@pytest.mark.django_db(transaction=True)
def test_retries_exhausted_fail_the_message_with_the_error(
    user, conversation, httpserver, cloud_worker
):
    # Issue 15: a 130429 is deferred, never a failed attempt (test_pacing.py);
    # a transient 131000 is what exhausts the attempts now.
    httpserver.expect_request(PATH).respond_with_json(
        {
            "error": {
                "message": "(#131000) Something went wrong",
                "type": "OAuthException",
                "code": 131000,
                "fbtrace_id": "AbCdEf",
            }
        },
        status=500,
    )
    message_id = client_for(user).post(url(conversation), {"text": "Hi"}).json()["id"]
    cloud_worker()
    wait_until(lambda: status_of(message_id) == "failed", timeout=60)
    assert len(httpserver.log) == 3  # QUEUE_RETRY_ATTEMPTS
    assert Message.objects.get(pk=message_id).error["code"] == 131000


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("name", "code"),
    [
        ("error_131047_reengagement.json", 131047),
        ("error_131026_undeliverable.json", 131026),
        ("error_190_token_expired.json", 190),
    ],
)
def test_permanent_errors_fail_at_once(
    user, conversation, httpserver, cloud_worker, name, code
):
    httpserver.expect_request(PATH).respond_with_json(send_api(name), status=400)
    message_id = client_for(user).post(url(conversation), {"text": "Hi"}).json()["id"]
    worker = cloud_worker()
    wait_until(lambda: status_of(message_id) == "failed", timeout=30)
    message = Message.objects.get(pk=message_id)
    assert message.error["code"] == code and message.wamid is None
    assert message.failed_at is not None
    # Failed in the first run: a retry would have left it queued.
    assert len(httpserver.log) == 1
    if code == 190:
        wait_until(lambda: "WHATSAPP_ACCESS_TOKEN" in worker.log(), timeout=10)
