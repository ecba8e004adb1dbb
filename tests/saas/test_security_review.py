"""Issue 16, medium and low: each hole the review found, shown closed."""

import pickle
import uuid

import pytest
from django.conf import settings
from django.test import Client, override_settings
from rest_framework.test import APIClient
from rest_framework_simplejwt.tokens import RefreshToken

from bookings.models import Salon
from saas.cache import cache_service, decode, encode
from tests.factories import MessageFactory, SalonFactory, UserFactory

TOKEN = "/api/auth/token/"
RESET = "/api/auth/password-reset/"


def _rates(**rates):
    return override_settings(
        REST_FRAMEWORK={
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {
                **settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"],
                **rates,
            },
        }
    )


# --- 2. throttles keyed on what the client cannot choose -------------------------
@pytest.mark.django_db
@_rates(auth="3/min")
def test_a_random_forwarded_for_does_not_lift_the_address_throttle():
    client = APIClient()
    answers = [
        client.post(
            TOKEN,
            {"username": f"u{n}", "password": "y"},
            format="json",
            HTTP_X_FORWARDED_FOR=f"10.0.{n}.{n}",
        ).status_code
        for n in range(4)
    ]
    assert answers == [401, 401, 401, 429]


@pytest.mark.django_db
@_rates(auth_username="3/min")
def test_guesses_on_one_username_are_throttled_from_any_address():
    UserFactory(username="alice")
    answers = [
        APIClient(REMOTE_ADDR=f"10.1.0.{n}")
        .post(TOKEN, {"username": "ALICE", "password": "guess"}, format="json")
        .status_code
        for n in range(4)
    ]
    assert answers == [401, 401, 401, 429]
    other = APIClient(REMOTE_ADDR="10.1.0.9").post(
        TOKEN, {"username": "bob", "password": "guess"}, format="json"
    )
    assert other.status_code == 401


@pytest.mark.django_db
@_rates(password_reset_address="2/hour")
def test_reset_mails_to_one_address_are_throttled_from_any_address():
    from notifications.models import EmailLog

    UserFactory(email="victim@example.com")
    answers = [
        APIClient(REMOTE_ADDR=f"10.2.0.{n}")
        .post(RESET, {"email": "victim@example.com"}, format="json")
        .status_code
        for n in range(3)
    ]
    assert answers == [200, 200, 429]
    assert EmailLog.objects.filter(to="victim@example.com").count() == 2


@pytest.mark.django_db
@override_settings(
    REST_FRAMEWORK={
        **settings.REST_FRAMEWORK,
        "NUM_PROXIES": 1,
        "DEFAULT_THROTTLE_RATES": {"auth": "2/min"},
    }
)
def test_behind_one_proxy_the_address_it_saw_counts():
    def attempt(forwarded):
        return APIClient(REMOTE_ADDR="172.30.0.10").post(
            TOKEN,
            {"username": "x", "password": "y"},
            format="json",
            HTTP_X_FORWARDED_FOR=forwarded,
        )

    # The client prepends whatever it likes; the proxy appends what it saw.
    assert attempt("1.1.1.1, 203.0.113.7").status_code == 401
    assert attempt("2.2.2.2, 203.0.113.7").status_code == 401
    assert attempt("3.3.3.3, 203.0.113.7").status_code == 429
    assert attempt("203.0.113.8").status_code == 401


# --- 3. WhatsApp phone number ids ---------------------------------------------
SALON = {"name": "Studio", "timezone": "UTC"}


@pytest.mark.django_db
@pytest.mark.parametrize(
    "bad_id", ["../../me/x#", "1065403522429 22", "abc123456789012", "123", "9" * 21]
)
def test_a_phone_number_id_that_is_not_meta_s_is_refused(auth_client, bad_id):
    response = auth_client.post(
        "/api/salons/", {**SALON, "whatsapp_phone_number_id": bad_id}, format="json"
    )
    assert response.status_code == 400
    assert "whatsapp_phone_number_id" in response.json()
    assert not Salon.objects.exists()


@pytest.mark.django_db
def test_a_taken_id_is_refused_without_saying_whose(auth_client, other_user):
    SalonFactory(owner=other_user, whatsapp_phone_number_id="106540352242922")
    response = auth_client.post(
        "/api/salons/",
        {**SALON, "whatsapp_phone_number_id": "106540352242922"},
        format="json",
    )
    assert response.status_code == 400
    text = str(response.json())
    assert other_user.username not in text and "already connected" in text


@pytest.mark.django_db
def test_the_claim_is_recorded_and_a_number_with_conversations_moves_only_by_staff(
    user, auth_client, staff_user
):
    created = auth_client.post(
        "/api/salons/",
        {**SALON, "whatsapp_phone_number_id": "106540352242922"},
        format="json",
    ).json()
    salon = Salon.objects.get(pk=created["id"])
    assert salon.whatsapp_claimed_by == user and salon.whatsapp_claimed_at
    MessageFactory(conversation__salon=salon)

    moved = auth_client.patch(
        f"/api/salons/{salon.pk}/",
        {"whatsapp_phone_number_id": "106540352242923"},
        format="json",
    )
    assert moved.status_code == 400 and "support" in str(moved.json())
    salon.refresh_from_db()
    assert salon.whatsapp_phone_number_id == "106540352242922"

    from bookings.services import salon_update

    salon_update(
        salon=salon,
        data={"whatsapp_phone_number_id": "106540352242923"},
        actor=staff_user,
    )
    salon.refresh_from_db()
    assert salon.whatsapp_phone_number_id == "106540352242923"
    assert salon.whatsapp_claimed_by == staff_user


# --- 4. a password change ends every token -------------------------------------
@pytest.mark.django_db
def test_a_password_change_ends_every_access_and_refresh_token(
    django_capture_on_commit_callbacks,
):
    alice = UserFactory()
    refresh = RefreshToken.for_user(alice)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {refresh.access_token}")
    assert client.get("/api/salons/").status_code == 200  # cached from here on

    with django_capture_on_commit_callbacks(execute=True):
        alice.set_password("a-Brand-new-passphrase-7")
        alice.save()

    assert client.get("/api/salons/").status_code == 401
    again = APIClient().post(
        "/api/auth/token/refresh/", {"refresh": str(refresh)}, format="json"
    )
    assert again.status_code == 401


# --- 5. the queue page's redirect stays on this site -----------------------------
@pytest.mark.django_db
@pytest.mark.parametrize(
    "target", ["//evil.example/x", "https://evil.example/", "/\\evil.example"]
)
def test_queue_page_refuses_to_redirect_off_site(staff_user, target):
    page = Client()
    page.force_login(staff_user)
    response = page.post(
        "/admin/queues/webhook/pause/", {"action": "resume", "next": target}
    )
    assert response.status_code == 302
    assert "evil.example" not in response["Location"]
    assert response["Location"].startswith("/admin/queues/")


# --- 6. /metrics ---------------------------------------------------------------
@pytest.mark.django_db
@override_settings(METRICS_TOKEN="scrape-me")
def test_metrics_refuse_an_anonymous_scrape_when_a_token_is_set():
    client = Client()
    assert client.get("/metrics").status_code == 401
    bad = client.get("/metrics", HTTP_AUTHORIZATION="Bearer wrong")
    assert bad.status_code == 401
    ok = client.get("/metrics", HTTP_AUTHORIZATION="Bearer scrape-me")
    assert ok.status_code == 200 and b"queue_jobs" in ok.content


@pytest.mark.django_db
def test_metrics_without_a_token_answer_only_this_machine():
    assert Client(REMOTE_ADDR="203.0.113.9").get("/metrics").status_code == 401
    assert Client(REMOTE_ADDR="127.0.0.1").get("/metrics").status_code == 200


@pytest.mark.django_db
@override_settings(METRICS_CACHE_SECONDS=60)
def test_metrics_reuse_one_report_for_a_scrape_storm(django_assert_num_queries):
    client = Client()
    client.get("/metrics")
    with django_assert_num_queries(0):  # the health report's SELECT 1 is not run
        for _ in range(5):
            assert client.get("/metrics").status_code == 200


# --- 8. salon ownership never moves in admin -----------------------------------
@pytest.mark.django_db
def test_admin_cannot_transfer_a_salon(staff_user, user, other_user):
    salon = SalonFactory(owner=user)
    page = Client()
    page.force_login(staff_user)
    form = page.get(f"/admin/bookings/salon/{salon.pk}/change/").content.decode()
    assert 'name="owner"' not in form
    page.post(
        f"/admin/bookings/salon/{salon.pk}/change/",
        {
            "owner": other_user.pk,
            "name": "Renamed",
            "whatsapp_phone_number_id": salon.whatsapp_phone_number_id,
            "timezone": "UTC",
            "language": "en_US",
            "email": "",
        },
    )
    salon.refresh_from_db()
    assert salon.name == "Renamed" and salon.owner == user


# --- 9. bookings that send e-mail are rate limited per tenant --------------------
@pytest.mark.django_db(transaction=True)
@_rates(booking_email="2/hour")
def test_bookings_with_email_are_rate_limited_per_tenant(user, auth_client):
    from notifications.models import EmailLog

    salon = SalonFactory(owner=user)

    def book(email):
        return auth_client.post(
            "/api/bookings/",
            {
                "salon": str(salon.pk),
                "customer_name": "Ann",
                "customer_phone": "+16505551234",
                "customer_email": email,
                "service_name": "Cut",
                "start_at": "2030-01-01T10:00:00Z",
            },
            format="json",
        ).status_code

    assert [book(f"c{n}@example.com") for n in range(3)] == [201, 201, 429]
    assert book("") == 201  # no e-mail, no relay
    assert EmailLog.objects.filter(template="booking_confirmation").count() == 2


# --- 10. nothing from the cache's Redis is unpickled unsigned ---------------------
class _Boom:
    def __reduce__(self):
        return (exec, ("import os; os.environ['CACHE_PWNED'] = '1'",))


@pytest.mark.django_db
def test_a_pickle_written_into_the_cache_redis_is_never_loaded(monkeypatch):
    monkeypatch.delenv("CACHE_PWNED", raising=False)
    key = f"salon:{uuid.uuid4()}"
    cache_service.client().set(key, pickle.dumps(_Boom()))
    assert cache_service.get(key, "miss") == "miss"
    forged = b"\x01" + b"\x00" * 32 + pickle.dumps(_Boom())
    cache_service.client().set(key, forged)
    assert cache_service.get(key, "miss") == "miss"
    import os

    assert "CACHE_PWNED" not in os.environ
    # Values the cache itself writes still round-trip, JSON or signed.
    value = {"when": uuid.uuid4()}
    assert decode(encode(value)) == value and encode({"a": 1}) == b'{"a":1}'


def test_django_redis_aliases_serialize_json_not_pickle():
    for alias in settings.CACHES.values():
        assert alias["OPTIONS"]["SERIALIZER"].endswith("JSONSerializer")
