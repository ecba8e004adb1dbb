"""GET /api/templates/{id}/ and /api/conversations/{id}/ are served from
``template:{id}`` and ``conversation:{id}``: no SQL once cached, fresh after a
write, and only for who may see their salon."""

import pytest

from tests.factories import ConversationFactory, TemplateFactory


@pytest.mark.django_db
def test_a_cached_template_retrieve_runs_no_sql(
    auth_client, user, django_assert_num_queries
):
    template = TemplateFactory(salon__owner=user)
    url = f"/api/templates/{template.pk}/"
    first = auth_client.get(url)  # fills template:, salon: and user: keys
    assert first.status_code == 200
    with django_assert_num_queries(0):
        second = auth_client.get(url)
    assert second.status_code == 200
    assert second.json() == first.json()
    assert second.json()["body"] == template.body


@pytest.mark.django_db
def test_a_cached_conversation_retrieve_runs_no_sql(
    auth_client, user, django_assert_num_queries
):
    conversation = ConversationFactory(salon__owner=user)
    url = f"/api/conversations/{conversation.pk}/"
    first = auth_client.get(url)
    assert first.status_code == 200
    with django_assert_num_queries(0):
        second = auth_client.get(url)
    assert second.json() == first.json()


@pytest.mark.django_db(transaction=True)
def test_a_template_write_makes_the_next_read_fresh(auth_client, user):
    template = TemplateFactory(salon__owner=user, body="Old {{1}}")
    url = f"/api/templates/{template.pk}/"
    assert auth_client.get(url).json()["body"] == "Old {{1}}"
    patched = auth_client.patch(url, {"body": "New {{1}}"}, format="json")
    assert patched.status_code == 200
    assert auth_client.get(url).json()["body"] == "New {{1}}"


@pytest.mark.django_db
def test_cached_template_and_conversation_of_another_owner_are_404(
    auth_client, other_client, user
):
    template = TemplateFactory(salon__owner=user)
    conversation = ConversationFactory(salon=template.salon)
    for url in (
        f"/api/templates/{template.pk}/",
        f"/api/conversations/{conversation.pk}/",
    ):
        assert auth_client.get(url).status_code == 200  # cached now
        assert other_client.get(url).status_code == 404
