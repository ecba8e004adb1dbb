"""GET /api/salons/{id}/ is served from ``salon:{id}``: no SQL once cached, the
same answer as the database's, fresh after a write, and tenancy kept."""

import pytest

from tests.factories import SalonFactory


def url(salon) -> str:
    return f"/api/salons/{salon.pk}/"


@pytest.mark.django_db
def test_a_cached_salon_retrieve_runs_no_sql(
    auth_client, user, django_assert_num_queries
):
    salon = SalonFactory(owner=user, name="Hair & Co")
    first = auth_client.get(url(salon))  # fills salon:{id} and user:{id}
    assert first.status_code == 200
    with django_assert_num_queries(0):
        second = auth_client.get(url(salon))
    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.json()["name"] == "Hair & Co"


@pytest.mark.django_db
def test_the_cached_answer_is_the_database_answer(auth_client, user):
    salon = SalonFactory(owner=user)
    from_database = auth_client.get(url(salon)).json()
    from_cache = auth_client.get(url(salon)).json()
    assert from_cache == from_database
    assert set(from_cache) == {
        "id",
        "name",
        "whatsapp_phone_number_id",
        "timezone",
        "language",
        "email",
        "created_at",
        "updated_at",
    }


@pytest.mark.django_db(transaction=True)
def test_a_write_makes_the_next_read_fresh(auth_client, user):
    salon = SalonFactory(owner=user, name="Old")
    assert auth_client.get(url(salon)).json()["name"] == "Old"
    patched = auth_client.patch(url(salon), {"name": "New"}, format="json")
    assert patched.status_code == 200
    assert auth_client.get(url(salon)).json()["name"] == "New"


@pytest.mark.django_db
def test_a_cached_salon_of_another_owner_is_still_a_404(
    auth_client, other_client, user, staff_client
):
    salon = SalonFactory(owner=user)
    assert auth_client.get(url(salon)).status_code == 200  # cached now
    assert other_client.get(url(salon)).status_code == 404
    assert staff_client.get(url(salon)).status_code == 200
