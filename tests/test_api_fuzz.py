"""Schemathesis against our own OpenAPI schema, in-process on the WSGI app,
with a valid JWT: no 5xx, no response that breaks the schema, no operation
that ignores auth."""

import pytest
import schemathesis
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from rest_framework_simplejwt.tokens import AccessToken
from schemathesis.specs.openapi.checks import positive_data_acceptance

from tests.factories import (
    BookingFactory,
    MessageFactory,
    SalonFactory,
    TemplateFactory,
)

pytestmark = pytest.mark.slow

EXAMPLES_PER_OPERATION = 25
# Schema-valid data that breaks a business rule OpenAPI cannot state (the
# salon must be the caller's, the start in the future, the password strong,
# names unique) is rightly a 400; every other check runs.
EXCLUDED_CHECKS = [positive_data_acceptance]


@pytest.fixture
def api_schema(db):
    from saas.wsgi import application

    # As Django's test client does: the test's transaction outlives each request.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield schemathesis.openapi.from_wsgi("/api/schema/", application)
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def owner_token(user):
    """The caller owns real objects, so ids in the schema's examples can hit."""
    salon = SalonFactory(owner=user)
    BookingFactory(salon=salon)
    TemplateFactory(salon=salon)
    MessageFactory(conversation__salon=salon)
    return str(AccessToken.for_user(user))


def test_every_operation_honours_the_schema(api_schema, owner_token):
    headers = {"Authorization": f"Bearer {owner_token}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 20
    failures = []
    for operation in operations:

        @hypothesis_settings(
            max_examples=EXAMPLES_PER_OPERATION,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
        )
        @given(case=operation.as_strategy())
        def fuzz(case):
            case.call_and_validate(headers=headers, excluded_checks=EXCLUDED_CHECKS)

        try:
            fuzz()
        except (Exception, BaseExceptionGroup) as exc:  # every operation, not the first
            failures.append(f"{operation.label}: {exc}")
    assert not failures, "\n\n".join(failures)
