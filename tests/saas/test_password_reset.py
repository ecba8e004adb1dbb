"""Password reset: no account discovery, a one-time token by e-mail."""

import re

import pytest
from rest_framework_simplejwt.tokens import RefreshToken

from notifications.models import EmailLog
from queues.definitions import EMAIL
from saas.api.auth import RESET_REQUESTED
from saas.passwords import password_reset_token
from tests.factories import UserFactory
from tests.utils import queued_jobs, wait_until

RESET = "/api/auth/password-reset/"
CONFIRM = "/api/auth/password-reset/confirm/"
NEW_PASSWORD = "a-New-passphrase-42"


@pytest.fixture
def alice(db):
    return UserFactory(username="alice", email="alice@example.com")


@pytest.mark.django_db(transaction=True)
def test_same_answer_for_any_address_and_mail_only_for_real_accounts(api_client, alice):
    unknown = api_client.post(RESET, {"email": "nobody@example.com"}, format="json")
    known = api_client.post(RESET, {"email": "ALICE@example.com"}, format="json")

    assert unknown.status_code == known.status_code == 200
    assert unknown.json() == known.json() == RESET_REQUESTED
    log = EmailLog.objects.get()
    assert (log.template, log.to) == ("password_reset", "alice@example.com")
    assert log.data["userName"] == "alice" and "resetToken" not in log.data
    assert len(queued_jobs(EMAIL.name)) == 1


@pytest.mark.django_db
def test_inactive_accounts_get_nothing(api_client):
    UserFactory(email="gone@example.com", is_active=False)
    response = api_client.post(RESET, {"email": "gone@example.com"}, format="json")
    assert response.status_code == 200 and not EmailLog.objects.exists()


@pytest.mark.django_db
def test_malformed_address_is_400(api_client):
    response = api_client.post(RESET, {"email": "alice"}, format="json")
    assert response.status_code == 400 and "email" in response.json()
    assert not EmailLog.objects.exists()


@pytest.mark.django_db
def test_token_sets_the_password_once_and_ends_sessions(api_client, alice):
    refresh = RefreshToken.for_user(alice)
    token = password_reset_token(alice)

    response = api_client.post(
        CONFIRM, {"token": token, "new_password": NEW_PASSWORD}, format="json"
    )
    assert response.status_code == 200, response.content
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)

    again = api_client.post(
        CONFIRM, {"token": token, "new_password": "yet-Another-pass-43"}, format="json"
    )
    assert again.status_code == 400 and "token" in again.json()
    alice.refresh_from_db()
    assert alice.check_password(NEW_PASSWORD)
    old_session = api_client.post(
        "/api/auth/token/refresh/", {"refresh": str(refresh)}, format="json"
    )
    assert old_session.status_code == 401


@pytest.mark.django_db
@pytest.mark.parametrize(
    "token", ["", "garbage", "MQ.abc-def", "Zm9v.123-456", "!!!.x"]
)
def test_bad_tokens_are_400(api_client, alice, token):
    response = api_client.post(
        CONFIRM, {"token": token, "new_password": NEW_PASSWORD}, format="json"
    )
    assert response.status_code == 400 and "token" in response.json()
    alice.refresh_from_db()
    assert alice.check_password("correct-horse-battery")


@pytest.mark.django_db
def test_weak_password_is_400_and_keeps_the_token_usable(api_client, alice):
    token = password_reset_token(alice)
    weak = api_client.post(
        CONFIRM, {"token": token, "new_password": "123"}, format="json"
    )
    assert weak.status_code == 400 and "new_password" in weak.json()
    alice.refresh_from_db()
    assert alice.check_password("correct-horse-battery")
    ok = api_client.post(
        CONFIRM, {"token": token, "new_password": NEW_PASSWORD}, format="json"
    )
    assert ok.status_code == 200


@pytest.mark.django_db(transaction=True)
def test_end_to_end_through_smtp(api_client, alice, start_worker, smtp_server):
    api_client.post(RESET, {"email": "alice@example.com"}, format="json")
    start_worker(EMAIL.name, env={"EMAIL_URL": smtp_server.url})
    [mail] = wait_until(lambda: smtp_server.to("alice@example.com"), timeout=60)
    assert mail.subject == "Reset your Salon password"
    text = mail.body("plain").replace("\r\n", "\n")
    token = re.search(r"^(\S+\.\S+)$", text, re.MULTILINE).group(1)
    assert token in mail.body("html")

    response = api_client.post(
        CONFIRM, {"token": token, "new_password": NEW_PASSWORD}, format="json"
    )
    assert response.status_code == 200
    login = api_client.post(
        "/api/auth/token/",
        {"username": "alice", "password": NEW_PASSWORD},
        format="json",
    )
    assert login.status_code == 200
