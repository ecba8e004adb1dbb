"""Every way to forge or replay a token answers 401."""

import base64
import json
from datetime import timedelta

import jwt
import pytest
import time_machine
from django.conf import settings
from django.utils import timezone
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import AccessToken, RefreshToken

pytestmark = pytest.mark.django_db


def get_salons(token: str) -> int:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {token}")
    return client.get("/api/salons/").status_code


def claims_for(user) -> dict:
    return dict(AccessToken.for_user(user).payload)


def b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def test_valid_token_is_accepted(user):
    assert get_salons(str(AccessToken.for_user(user))) == 200


def test_expired_token(user):
    token = str(AccessToken.for_user(user))
    lifetime = settings.SIMPLE_JWT["ACCESS_TOKEN_LIFETIME"]
    with time_machine.travel(timezone.now() + lifetime + timedelta(seconds=5)):
        assert get_salons(token) == 401


def test_refresh_reused_after_rotation(user, api_client):
    refresh = str(RefreshToken.for_user(user))
    first = api_client.post(
        "/api/auth/token/refresh/", {"refresh": refresh}, format="json"
    )
    assert first.status_code == 200
    again = api_client.post(
        "/api/auth/token/refresh/", {"refresh": refresh}, format="json"
    )
    assert again.status_code == 401


def test_deactivated_users_token(user):
    token = str(AccessToken.for_user(user))
    user.is_active = False
    user.save()
    assert get_salons(token) == 401


def test_alg_none(user):
    unsigned = f"{b64({'alg': 'none', 'typ': 'JWT'})}.{b64(claims_for(user))}."
    assert get_salons(unsigned) == 401


def test_signed_with_secret_key_instead_of_signing_key(user):
    forged = jwt.encode(claims_for(user), settings.SECRET_KEY, algorithm="HS256")
    assert get_salons(forged) == 401


def test_tampered_payload(user, other_user):
    header, _payload, signature = str(AccessToken.for_user(user)).split(".")
    claims = claims_for(user) | {"user_id": str(other_user.pk)}
    assert get_salons(f"{header}.{b64(claims)}.{signature}") == 401


def test_refresh_token_is_not_an_access_token(user):
    assert get_salons(str(RefreshToken.for_user(user))) == 401


def test_garbage_and_wrong_scheme(user):
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION="Bearer not.a.token")
    assert client.get("/api/salons/").status_code == 401
    client.credentials(HTTP_AUTHORIZATION=f"Basic {AccessToken.for_user(user)}")
    assert client.get("/api/salons/").status_code == 401
