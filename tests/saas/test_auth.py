import pytest
from django.test import override_settings
from rest_framework.test import APIClient

pytestmark = pytest.mark.django_db


def register(client, username="alice", password="s3cure-Passphrase!"):
    return client.post(
        "/api/auth/register/",
        {
            "username": username,
            "email": f"{username}@example.com",
            "password": password,
        },
        format="json",
    )


def test_register_returns_tokens_that_authenticate(api_client):
    response = register(api_client)
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["username"] == "alice" and body["access"] and body["refresh"]
    api_client.credentials(HTTP_AUTHORIZATION=f"Bearer {body['access']}")
    assert api_client.get("/api/salons/").status_code == 200


def test_register_rejects_weak_password_and_duplicate_username(api_client):
    weak = register(api_client, password="123")
    assert weak.status_code == 400 and "password" in str(weak.json())
    assert register(api_client).status_code == 201
    duplicate = register(api_client)
    assert duplicate.status_code == 400 and "username" in duplicate.json()


def test_token_and_refresh_rotation_blacklists_old_refresh(api_client):
    register(api_client)
    tokens = api_client.post(
        "/api/auth/token/",
        {"username": "alice", "password": "s3cure-Passphrase!"},
        format="json",
    ).json()
    first = api_client.post(
        "/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json"
    )
    assert first.status_code == 200 and first.json()["refresh"] != tokens["refresh"]
    reused = api_client.post(
        "/api/auth/token/refresh/", {"refresh": tokens["refresh"]}, format="json"
    )
    assert reused.status_code == 401


def test_wrong_password_is_401(api_client):
    register(api_client)
    response = api_client.post(
        "/api/auth/token/", {"username": "alice", "password": "nope"}, format="json"
    )
    assert response.status_code == 401


def test_anonymous_api_is_401(api_client):
    assert api_client.get("/api/salons/").status_code == 401


@override_settings(
    REST_FRAMEWORK={
        **__import__("django.conf").conf.settings.REST_FRAMEWORK,
        "DEFAULT_THROTTLE_RATES": {"auth": "3/min"},
    }
)
def test_token_endpoint_is_throttled():
    client = APIClient()
    answers = [
        client.post(
            "/api/auth/token/", {"username": "x", "password": "y"}, format="json"
        ).status_code
        for _ in range(4)
    ]
    assert answers == [401, 401, 401, 429]


def test_access_token_is_short_lived_and_signed_with_its_own_key():
    from django.conf import settings

    jwt = settings.SIMPLE_JWT
    assert jwt["ACCESS_TOKEN_LIFETIME"].total_seconds() <= 15 * 60
    assert jwt["SIGNING_KEY"] != settings.SECRET_KEY
    assert jwt["ROTATE_REFRESH_TOKENS"] and jwt["BLACKLIST_AFTER_ROTATION"]
