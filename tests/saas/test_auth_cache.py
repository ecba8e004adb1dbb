"""The API's JWT authentication reads the user through ``user:{id}``: no
database on a cached call, no password hash in Redis, and saves apply to the
very next request."""

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from saas.redis import cache_redis
from saas.user_cache import user_cached, user_key
from tests.conftest import client_for
from tests.factories import SalonFactory

pytestmark = pytest.mark.django_db(transaction=True)

DASHBOARD = "/api/dashboard/stats/"


def test_a_cached_dashboard_call_touches_no_database(user):
    SalonFactory(owner=user)
    client = client_for(user)
    assert client.get(DASHBOARD).status_code == 200  # user and dashboard cached
    with CaptureQueriesContext(connection) as queries:
        response = client.get(DASHBOARD)
    assert response.status_code == 200 and response["X-Cache"] == "hit"
    assert [q["sql"] for q in queries] == []


def test_the_password_hash_never_reaches_redis(user):
    user_cached(user.pk)
    raw = cache_redis().get(user_key(user.pk))
    assert raw and user.username.encode() in raw
    assert user.password.encode() not in raw


def test_saving_a_cached_user_keeps_the_password(user):
    user.set_password("s3cret-passw0rd")
    user.save()
    cached = user_cached(user.pk)
    cached.first_name = "Renamed"
    cached.save()
    user.refresh_from_db()
    assert user.first_name == "Renamed" and user.check_password("s3cret-passw0rd")


def test_deactivation_applies_to_the_next_request(user):
    client = client_for(user)
    assert client.get("/api/salons/").status_code == 200
    user.is_active = False
    user.save()
    assert client.get("/api/salons/").status_code == 401


def test_losing_staff_rights_applies_to_the_next_request(staff_user, user):
    salon = SalonFactory(owner=user)
    client = client_for(staff_user)
    assert client.get(f"/api/salons/{salon.pk}/").status_code == 200
    staff_user.is_staff = staff_user.is_superuser = False
    staff_user.save()
    assert client.get(f"/api/salons/{salon.pk}/").status_code == 404


def test_a_deleted_user_is_refused(user):
    client = client_for(user)
    assert client.get("/api/salons/").status_code == 200
    user.delete()
    assert client.get("/api/salons/").status_code == 401
