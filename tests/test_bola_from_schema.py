"""The BOLA matrix, generated from the OpenAPI schema: every operation that
takes an object id in its path, called by tenant A on tenant B's object,
answers 404 and changes nothing. A new endpoint joins the matrix by itself;
one whose resource this test cannot name fails it until it is added."""

import re

import pytest
from django.apps import apps

pytestmark = pytest.mark.django_db

#: first path segment after /api/ -> the victim object to use
RESOURCES = {
    "salons": "salon",
    "bookings": "booking",
    "conversations": "conversation",
    "messages": "message",
    "templates": "template",
}
WATCHED_MODELS = [
    "bookings.Salon",
    "bookings.Booking",
    "messaging.Conversation",
    "messaging.Message",
    "messaging.MessageTemplate",
]
PROBE_BODY = {
    "name": "hijacked",
    "customer_name": "hijacked",
    "body": "hijacked",
    "text": "hijacked",
    "status": "cancelled",
}


def snapshot():
    return {
        label: list(apps.get_model(label).objects.order_by("pk").values())
        for label in WATCHED_MODELS
    }


def id_operations(schema: dict):
    for path, item in schema["paths"].items():
        if "{id}" not in path:
            continue
        for method in item:
            if method in ("get", "post", "put", "patch", "delete"):
                yield method, path


def test_every_id_operation_is_404_for_another_tenant(auth_client, victim):
    schema = auth_client.get("/api/schema/", HTTP_ACCEPT="application/json").json()
    operations = list(id_operations(schema))
    assert len(operations) >= 15
    before = snapshot()
    for method, path in operations:
        resource = re.match(r"^/api/([^/]+)/", path).group(1)
        assert resource in RESOURCES, f"add {path} to the BOLA matrix"
        url = path.replace("{id}", str(victim[RESOURCES[resource]].pk))
        response = getattr(auth_client, method)(url, PROBE_BODY, format="json")
        assert response.status_code == 404, (method.upper(), url, response.status_code)
    assert snapshot() == before
