"""The cache fails open: a real cache Redis on its own port is stopped (or hung)
mid-test; the API keeps answering from the database, and answers from the cache
again, never stale, once Redis is back."""

import copy
import logging
import signal
from datetime import timedelta

import pytest
from django.conf import settings
from django.test import override_settings
from django.utils import timezone

from tests.factories import BookingFactory, SalonFactory
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/dashboard/stats/"


def caches_on(port: int) -> dict:
    caches = copy.deepcopy(settings.CACHES)
    for alias in caches.values():
        alias["LOCATION"] = f"redis://127.0.0.1:{port}/0"
    return caches


def new_booking(client, salon):
    return client.post(
        "/api/bookings/",
        {
            "salon": str(salon.pk),
            "customer_name": "Ana",
            "customer_phone": "+34600111222",
            "service_name": "Colour",
            "start_at": (timezone.now() + timedelta(days=2)).isoformat(),
        },
        format="json",
    )


def cache_errors(caplog) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "saas.cache" and r.levelno >= logging.ERROR
    ]


def test_api_answers_while_the_cache_redis_is_down_and_uses_it_when_back(
    make_redis_server, auth_client, user, caplog
):
    server = make_redis_server()
    port = server.port
    salon = SalonFactory(owner=user)
    BookingFactory(salon=salon)
    with override_settings(CACHES=caches_on(port), CACHE_RETRY_AFTER_SECONDS=0.2):
        assert auth_client.get(URL)["X-Cache"] == "miss"
        assert auth_client.get(URL)["X-Cache"] == "hit"
        assert server.client().exists(f"dashboard:stats:{user.pk}:")

        server.stop()
        with caplog.at_level(logging.ERROR, logger="saas.cache"):
            for _ in range(5):
                response = auth_client.get(URL)
                assert response.status_code == 200
                assert response["X-Cache"] == "miss"
                assert response.json()["bookings_total"] == 1
            assert new_booking(auth_client, salon).status_code == 201
            template = auth_client.post(
                "/api/templates/",
                {
                    "salon": str(salon.pk),
                    "name": "t",
                    "category": "utility",
                    "body": "b",
                },
                format="json",
            )
            assert template.status_code == 201
            renamed = auth_client.patch(
                f"/api/salons/{salon.pk}/", {"name": "Renamed"}, format="json"
            )
            assert renamed.status_code == 200
            response = auth_client.get(URL, {"salon": str(salon.pk)})
            assert response.status_code == 200
            assert response.json()["bookings_total"] == 2
        # Logged once for the outage, not once per request.
        assert len(cache_errors(caplog)) == 1, cache_errors(caplog)

        make_redis_server(port=port)
        wait_until(
            lambda: auth_client.get(URL)["X-Cache"] == "hit",
            timeout=20,
            message="dashboard served from the cache again",
        )
        assert auth_client.get(URL).json()["bookings_total"] == 2


def test_write_during_a_hung_cache_is_not_served_stale_when_it_recovers(
    make_redis_server, auth_client, user, caplog
):
    """Redis keeps its data but stops answering while a write commits: the
    invalidation that timed out is replayed when it answers again."""
    server = make_redis_server()
    salon = SalonFactory(owner=user)
    BookingFactory(salon=salon)
    with override_settings(
        CACHES=caches_on(server.port), CACHE_RETRY_AFTER_SECONDS=0.2
    ):
        auth_client.get(URL)
        assert auth_client.get(URL).json()["bookings_total"] == 1
        server.kill(signal.SIGSTOP)
        try:
            assert new_booking(auth_client, salon).status_code == 201
            response = auth_client.get(URL)
            assert response.status_code == 200
            assert response.json()["bookings_total"] == 2
        finally:
            server.kill(signal.SIGCONT)
        assert len(cache_errors(caplog)) == 1

        def served_from_cache():
            response = auth_client.get(URL)
            assert response.json()["bookings_total"] == 2, "stale dashboard"
            return response["X-Cache"] == "hit"

        wait_until(served_from_cache, timeout=20, message="cache used again")


def test_write_while_the_cache_is_down_is_not_served_stale_when_it_returns(
    make_redis_server, auth_client, user, tmp_path
):
    """Redis comes back with its data (append-only file): the invalidation that
    could not be sent during the outage is replayed before the next read."""
    persistent = ["--dir", str(tmp_path), "--appendonly", "yes"]
    server = make_redis_server(extra=persistent)
    salon = SalonFactory(owner=user)
    BookingFactory(salon=salon)
    params = {"salon": str(salon.pk)}
    with override_settings(
        CACHES=caches_on(server.port), CACHE_RETRY_AFTER_SECONDS=0.2
    ):
        auth_client.get(URL, params)
        assert auth_client.get(URL, params)["X-Cache"] == "hit"
        server.stop()
        assert new_booking(auth_client, salon).status_code == 201

        back = make_redis_server(port=server.port, extra=persistent)
        assert back.client().exists(f"dashboard:stats:{user.pk}:{salon.pk}")

        def served_from_cache():
            response = auth_client.get(URL, params)
            assert response.json()["bookings_total"] == 2, "stale dashboard"
            return response["X-Cache"] == "hit"

        wait_until(served_from_cache, timeout=20, message="cache used again")
