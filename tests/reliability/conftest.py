import pytest

from tests.factories import SalonFactory
from tests.messaging.conftest import SALON_PHONE_NUMBER_ID


@pytest.fixture
def salon(db):
    return SalonFactory(whatsapp_phone_number_id=SALON_PHONE_NUMBER_ID)
