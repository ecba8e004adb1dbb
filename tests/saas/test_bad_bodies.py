"""Bad bodies get a 4xx, before anything big is read or stored."""

import json

import pytest

from bookings.models import Salon

pytestmark = pytest.mark.django_db

WRITE_PATHS = [
    "/api/salons/",
    "/api/bookings/",
    "/api/templates/",
    "/api/auth/register/",
]


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_ten_megabyte_body_is_413(auth_client, path):
    body = b'{"name": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = auth_client.generic("POST", path, body, content_type="application/json")
    assert response.status_code == 413


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_deeply_nested_json_is_400(auth_client, path):
    body = "[" * 100_000 + "]" * 100_000
    response = auth_client.generic("POST", path, body, content_type="application/json")
    assert response.status_code == 400


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_ten_thousand_element_array_is_400(auth_client, path):
    body = json.dumps([{"name": "x"}] * 10_000)
    response = auth_client.generic("POST", path, body, content_type="application/json")
    assert response.status_code == 400
    assert not Salon.objects.exists()


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_wrong_content_type_is_415(auth_client, path):
    response = auth_client.generic("POST", path, "name=x", content_type="text/plain")
    assert response.status_code == 415


@pytest.mark.parametrize("path", WRITE_PATHS)
def test_invalid_utf8_is_400(auth_client, path):
    body = b'{"name": "\xff\xfe\xfa"}'
    response = auth_client.generic("POST", path, body, content_type="application/json")
    assert response.status_code == 400


def test_invalid_content_length_is_400(auth_client):
    response = auth_client.generic(
        "POST",
        "/api/salons/",
        b"{}",
        content_type="application/json",
        CONTENT_LENGTH="x",
    )
    assert response.status_code == 400
