import pytest

from bookings.models import Booking, Salon
from tests.factories import BookingFactory, SalonFactory

pytestmark = pytest.mark.django_db

SALON = {
    "name": "Studio",
    "whatsapp_phone_number_id": "555000111000111",
    "timezone": "Europe/Madrid",
}


@pytest.fixture
def salon(user):
    return SalonFactory(owner=user)


def booking_body(salon, **overrides):
    return {
        "salon": str(salon.pk),
        "customer_name": "Maria Gomez",
        "customer_phone": "+16505551234",
        "customer_email": "",
        "service_name": "Haircut",
        "start_at": "2099-05-01T10:00:00Z",
        **overrides,
    }


def test_salon_crud(auth_client, user):
    created = auth_client.post(
        "/api/salons/", {**SALON, "email": "s@example.com"}, format="json"
    )
    assert created.status_code == 201, created.content
    salon_id = created.json()["id"]
    assert Salon.objects.get(pk=salon_id).owner == user
    patched = auth_client.patch(
        f"/api/salons/{salon_id}/", {"name": "Renamed"}, format="json"
    )
    assert patched.status_code == 200 and patched.json()["name"] == "Renamed"
    assert auth_client.delete(f"/api/salons/{salon_id}/").status_code == 204
    assert not Salon.objects.filter(pk=salon_id).exists()


def test_duplicate_phone_number_id_is_400(auth_client, other_user):
    SalonFactory(
        owner=other_user, whatsapp_phone_number_id=SALON["whatsapp_phone_number_id"]
    )
    response = auth_client.post("/api/salons/", SALON, format="json")
    assert response.status_code == 400
    assert "whatsapp_phone_number_id" in response.json()
    assert Salon.objects.count() == 1


@pytest.mark.parametrize(
    "field, value",
    [("timezone", "Mars/Olympus"), ("email", "not-an-email"), ("name", "")],
)
def test_salon_field_errors(auth_client, field, value):
    response = auth_client.post("/api/salons/", {**SALON, field: value}, format="json")
    assert response.status_code == 400 and field in response.json()
    assert not Salon.objects.exists()


def test_missing_fields_are_named(auth_client):
    response = auth_client.post("/api/bookings/", {}, format="json")
    assert response.status_code == 400
    assert {
        "salon",
        "customer_name",
        "customer_phone",
        "service_name",
        "start_at",
    } <= set(response.json())


def test_malformed_json_is_400(auth_client):
    response = auth_client.generic(
        "POST", "/api/salons/", '{"name": "x",', content_type="application/json"
    )
    assert response.status_code == 400
    assert "JSON parse error" in response.json()["detail"]


def test_booking_create_normalises_phone(auth_client, salon):
    response = auth_client.post(
        "/api/bookings/",
        booking_body(salon, customer_phone="+1 650-555-1234"),
        format="json",
    )
    assert response.status_code == 201, response.content
    assert response.json()["customer_phone"] == "+16505551234"
    assert response.json()["metadata"] == {}


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"customer_phone": "6505551234"}, "customer_phone"),
        ({"customer_phone": "+1 not a phone"}, "customer_phone"),
        ({"start_at": "2001-01-01T10:00:00Z"}, "start_at"),
        ({"service_name": "   "}, "service_name"),
        ({"status": "teleported"}, "status"),
        ({"customer_email": "nope"}, "customer_email"),
    ],
)
def test_booking_bad_input_is_400_and_stores_nothing(
    auth_client, salon, overrides, field
):
    response = auth_client.post(
        "/api/bookings/", booking_body(salon, **overrides), format="json"
    )
    assert response.status_code == 400, response.content
    assert field in response.json()
    assert not Booking.objects.exists()


def test_cancel_endpoint(auth_client, salon):
    booking = BookingFactory(salon=salon)
    response = auth_client.post(f"/api/bookings/{booking.pk}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    booking.refresh_from_db()
    assert booking.status == Booking.Status.CANCELLED


def test_completed_booking_cannot_be_cancelled(auth_client, salon):
    booking = BookingFactory(salon=salon, status=Booking.Status.COMPLETED)
    response = auth_client.post(f"/api/bookings/{booking.pk}/cancel/")
    assert response.status_code == 400
    booking.refresh_from_db()
    assert booking.status == Booking.Status.COMPLETED


def test_metadata_is_read_only(auth_client, salon):
    booking = BookingFactory(salon=salon)
    auth_client.patch(
        f"/api/bookings/{booking.pk}/", {"metadata": {"x": 1}}, format="json"
    )
    booking.refresh_from_db()
    assert booking.metadata == {}


def test_list_is_paginated_and_filterable(auth_client, salon):
    BookingFactory.create_batch(3, salon=salon)
    BookingFactory(salon=salon, status=Booking.Status.CANCELLED)
    body = auth_client.get("/api/bookings/", {"status": "cancelled"}).json()
    assert body["count"] == 1 and "next" in body and "results" in body
    assert auth_client.get("/api/bookings/", {"salon": "not-a-uuid"}).status_code == 400


def test_schema_and_docs_answer(api_client):
    assert api_client.get("/api/schema/").status_code == 200
    assert api_client.get("/api/docs/").status_code == 200
    assert api_client.get("/healthz").json() == {"status": "ok"}


# --- lifecycle through HTTP: reminders and e-mails ----------------------------


def lifecycle_snapshot():
    from bookings.models import BookingReminder
    from notifications.models import EmailLog
    from tests.utils import queued_jobs

    return (
        Booking.objects.count(),
        BookingReminder.objects.count(),
        EmailLog.objects.count(),
        len(queued_jobs("notification:email")) + len(queued_jobs("booking:reminder")),
    )


def test_create_answers_201_with_reminders_and_a_queued_confirmation(
    auth_client, salon, django_capture_on_commit_callbacks
):
    from bookings.models import BookingReminder
    from notifications.models import EmailLog

    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(
            "/api/bookings/",
            booking_body(salon, customer_email="maria@example.com"),
            format="json",
        )
    assert response.status_code == 201, response.content
    booking_id = response.json()["id"]
    assert set(
        BookingReminder.objects.filter(booking_id=booking_id).values_list(
            "kind", "status"
        )
    ) == {("day_before", "pending"), ("hour_before", "pending")}
    log = EmailLog.objects.get()
    assert (log.template, log.to, log.data["bookingId"]) == (
        "booking_confirmation",
        "maria@example.com",
        booking_id,
    )
    assert lifecycle_snapshot()[3] == 1  # the e-mail job; reminders wait in rows


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"customer_phone": "0034 612"}, "customer_phone"),
        ({"start_at": "2020-01-01T10:00:00Z"}, "start_at"),
        ({"salon": "00000000-0000-0000-0000-000000000000"}, "salon"),
        ({"salon": "not-a-uuid"}, "salon"),
    ],
)
def test_bad_booking_leaves_no_reminder_mail_or_job(
    auth_client, salon, overrides, field, django_capture_on_commit_callbacks
):
    before = lifecycle_snapshot()
    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(
            "/api/bookings/",
            {**booking_body(salon, customer_email="maria@example.com"), **overrides},
            format="json",
        )
    assert response.status_code == 400 and field in response.json()
    assert lifecycle_snapshot() == before


def test_another_tenants_salon_leaves_nothing(
    other_client, salon, django_capture_on_commit_callbacks
):
    before = lifecycle_snapshot()
    with django_capture_on_commit_callbacks(execute=True):
        response = other_client.post(
            "/api/bookings/",
            booking_body(salon, customer_email="maria@example.com"),
            format="json",
        )
    assert response.status_code == 400 and "salon" in response.json()
    assert lifecycle_snapshot() == before


def test_cancel_endpoint_mails_and_stops_reminders(
    auth_client, salon, django_capture_on_commit_callbacks
):
    from bookings.models import BookingReminder
    from notifications.models import EmailLog

    created = auth_client.post(
        "/api/bookings/",
        booking_body(salon, customer_email="maria@example.com"),
        format="json",
    ).json()
    with django_capture_on_commit_callbacks(execute=True):
        response = auth_client.post(f"/api/bookings/{created['id']}/cancel/")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    assert set(
        BookingReminder.objects.filter(booking_id=created["id"]).values_list(
            "status", flat=True
        )
    ) == {"skipped"}
    assert EmailLog.objects.filter(template="booking_cancelled").count() == 1


def test_patch_start_reschedules_reminders(auth_client, salon):
    from bookings.models import BookingReminder

    created = auth_client.post(
        "/api/bookings/", booking_body(salon), format="json"
    ).json()
    response = auth_client.patch(
        f"/api/bookings/{created['id']}/",
        {"start_at": "2099-06-01T10:00:00Z"},
        format="json",
    )
    assert response.status_code == 200, response.content
    due = BookingReminder.objects.get(
        booking_id=created["id"], kind="hour_before"
    ).due_at
    assert due.isoformat() == "2099-06-01T09:00:00+00:00"


def test_creating_a_salon_welcomes_the_owner(auth_client, user):
    from notifications.models import EmailLog

    response = auth_client.post("/api/salons/", SALON, format="json")
    assert response.status_code == 201
    log = EmailLog.objects.get()
    assert (log.template, log.to) == ("salon_welcome", user.email)
