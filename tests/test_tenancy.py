"""The tenant matrix: every endpoint and method, another tenant's id is a 404
that changes nothing; anonymous is a 401."""

import pytest

from bookings.models import Booking, Salon
from messaging.models import MessageTemplate
from tests.factories import (
    BookingFactory,
    SalonFactory,
)

pytestmark = pytest.mark.django_db


def snapshot():
    return (
        list(Salon.objects.order_by("pk").values()),
        list(Booking.objects.order_by("pk").values()),
        list(MessageTemplate.objects.order_by("pk").values()),
    )


def object_requests(v):
    s, b, c, m, t = (
        v[k].pk for k in ("salon", "booking", "conversation", "message", "template")
    )
    body = {"name": "x", "customer_name": "x", "body": "x"}
    return [
        ("get", f"/api/salons/{s}/", None),
        (
            "put",
            f"/api/salons/{s}/",
            {**body, "whatsapp_phone_number_id": "100000000000001", "timezone": "UTC"},
        ),
        ("patch", f"/api/salons/{s}/", body),
        ("delete", f"/api/salons/{s}/", None),
        ("get", f"/api/bookings/{b}/", None),
        ("put", f"/api/bookings/{b}/", body),
        ("patch", f"/api/bookings/{b}/", body),
        ("delete", f"/api/bookings/{b}/", None),
        ("post", f"/api/bookings/{b}/cancel/", None),
        ("get", f"/api/conversations/{c}/", None),
        ("get", f"/api/conversations/{c}/messages/", None),
        ("post", f"/api/conversations/{c}/messages/", {"text": "hi"}),
        ("get", f"/api/messages/{m}/", None),
        ("get", f"/api/templates/{t}/", None),
        ("put", f"/api/templates/{t}/", body),
        ("patch", f"/api/templates/{t}/", body),
        ("delete", f"/api/templates/{t}/", None),
    ]


def collection_paths():
    return ["/api/salons/", "/api/bookings/", "/api/conversations/", "/api/templates/"]


def test_other_tenants_objects_are_404_and_unchanged(auth_client, victim):
    before = snapshot()
    for method, path, body in object_requests(victim):
        response = getattr(auth_client, method)(path, body, format="json")
        assert response.status_code == 404, (method, path, response.status_code)
    assert snapshot() == before
    assert Booking.objects.get(pk=victim["booking"].pk).status == Booking.Status.PENDING


def test_lists_show_only_own_objects(auth_client, user, victim):
    own = SalonFactory(owner=user)
    BookingFactory(salon=own)
    for path in collection_paths():
        body = auth_client.get(path).json()
        ids = {str(row.get("salon", row["id"])) for row in body["results"]}
        assert str(victim["salon"].pk) not in ids, path
    salons = auth_client.get("/api/salons/").json()
    assert [row["id"] for row in salons["results"]] == [str(own.pk)]


def test_filtering_by_another_tenants_salon_shows_nothing(auth_client, victim):
    for path in ("/api/bookings/", "/api/conversations/", "/api/templates/"):
        body = auth_client.get(path, {"salon": str(victim["salon"].pk)}).json()
        assert body["count"] == 0, path


def test_creating_in_another_tenants_salon_is_refused(auth_client, victim):
    before = snapshot()
    booking = auth_client.post(
        "/api/bookings/",
        {
            "salon": str(victim["salon"].pk),
            "customer_name": "Eve",
            "customer_phone": "+16505551234",
            "service_name": "Cut",
            "start_at": "2099-01-01T10:00:00Z",
        },
        format="json",
    )
    template = auth_client.post(
        "/api/templates/",
        {
            "salon": str(victim["salon"].pk),
            "name": "t",
            "category": "utility",
            "body": "b",
        },
        format="json",
    )
    assert booking.status_code == 400 and "salon" in booking.json()
    assert template.status_code == 400 and "salon" in template.json()
    assert snapshot() == before


def test_staff_see_every_salon(staff_client, victim):
    body = staff_client.get("/api/salons/").json()
    assert str(victim["salon"].pk) in {row["id"] for row in body["results"]}


def test_anonymous_is_401_everywhere(api_client, victim):
    for method, path, body in object_requests(victim):
        assert (
            getattr(api_client, method)(path, body, format="json").status_code == 401
        ), path
    for path in collection_paths():
        assert api_client.get(path).status_code == 401, path
        assert api_client.post(path, {}, format="json").status_code in (401, 405), path


def test_dashboard_of_another_tenants_salon_is_404(auth_client, victim):
    response = auth_client.get(
        "/api/dashboard/stats/", {"salon": str(victim["salon"].pk)}
    )
    assert response.status_code == 404
    own = auth_client.get("/api/dashboard/stats/").json()
    assert own["bookings_total"] == 0 and own["messages_inbound"] == 0
