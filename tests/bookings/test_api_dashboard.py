"""GET /api/dashboard/stats/: the contract (shape, params, errors, X-Cache)."""

import pytest

from tests.factories import BookingFactory, SalonFactory

pytestmark = pytest.mark.django_db
URL = "/api/dashboard/stats/"
FIELDS = {
    "bookings_total",
    "bookings_today",
    "bookings_upcoming",
    "bookings_by_status",
    "conversations_total",
    "messages_inbound",
    "messages_outbound",
    "messages_failed",
    "delivery_rate",
    "reminders_sent",
    "generated_at",
}


def test_fields_and_cache_header(auth_client, user):
    salon = SalonFactory(owner=user)
    BookingFactory.create_batch(2, salon=salon)
    first = auth_client.get(URL)
    assert first.status_code == 200
    assert set(first.json()) == FIELDS
    assert first.json()["bookings_total"] == 2
    assert first["X-Cache"] == "miss"
    second = auth_client.get(URL)
    assert second["X-Cache"] == "hit"
    assert second.json() == first.json()  # generated_at shows the cached moment


def test_one_salon(auth_client, user):
    salon = SalonFactory(owner=user)
    BookingFactory(salon=salon)
    BookingFactory(salon__owner=user)
    body = auth_client.get(URL, {"salon": str(salon.pk)}).json()
    assert body["bookings_total"] == 1
    assert auth_client.get(URL).json()["bookings_total"] == 2


def test_malformed_salon_is_400(auth_client):
    response = auth_client.get(URL, {"salon": "not-a-uuid"})
    assert response.status_code == 400
    assert "salon" in response.json()


def test_unknown_salon_is_404_and_not_cached(auth_client, user):
    missing = "00000000-0000-0000-0000-000000000001"
    assert auth_client.get(URL, {"salon": missing}).status_code == 404
    assert auth_client.get(URL, {"salon": missing}).status_code == 404


def test_anonymous_is_401(api_client):
    assert api_client.get(URL).status_code == 401


def test_schema_documents_the_dashboard(auth_client):
    schema = auth_client.get("/api/schema/", HTTP_ACCEPT="application/json")
    assert schema.status_code == 200
    assert "/api/dashboard/stats/" in schema.content.decode()
