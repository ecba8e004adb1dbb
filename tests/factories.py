from datetime import timedelta

import factory
from django.contrib.auth import get_user_model
from django.utils import timezone

from bookings.models import Booking, Salon
from messaging.models import Conversation, Message, MessageTemplate


class UserFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = get_user_model()
        skip_postgeneration_save = True

    username = factory.Sequence(lambda n: f"owner{n}")
    email = factory.LazyAttribute(lambda u: f"{u.username}@example.com")
    password = factory.PostGenerationMethodCall("set_password", "correct-horse-battery")

    @factory.post_generation
    def _save(obj, create, extracted, **kwargs):
        if create:
            obj.save()


class SalonFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Salon

    owner = factory.SubFactory(UserFactory)
    name = factory.Sequence(lambda n: f"Salon {n}")
    whatsapp_phone_number_id = factory.Sequence(lambda n: f"{100000000000000 + n}")
    timezone = "Europe/Madrid"
    email = factory.LazyAttribute(
        lambda s: f"salon{s.whatsapp_phone_number_id}@example.com"
    )


class BookingFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Booking

    salon = factory.SubFactory(SalonFactory)
    customer_name = "Maria Gomez"
    customer_phone = "+16505551234"
    customer_email = "maria@example.com"
    service_name = "Haircut"
    start_at = factory.LazyFunction(lambda: timezone.now() + timedelta(days=3))


class ConversationFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Conversation

    salon = factory.SubFactory(SalonFactory)
    customer_wa_id = factory.Sequence(lambda n: f"1650555{n:04d}")
    customer_name = "Maria Gomez"
    last_message_at = factory.LazyFunction(timezone.now)


class MessageFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = Message

    conversation = factory.SubFactory(ConversationFactory)
    salon = factory.LazyAttribute(lambda m: m.conversation.salon)
    wamid = factory.Sequence(lambda n: f"wamid.TEST{n:08d}")
    direction = Message.Direction.INBOUND
    type = "text"
    body = "Hello"
    status = Message.Status.RECEIVED
    created_at = factory.LazyFunction(timezone.now)


class TemplateFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = MessageTemplate

    salon = factory.SubFactory(SalonFactory)
    name = factory.Sequence(lambda n: f"template_{n}")
    language = "en_US"
    category = MessageTemplate.Category.UTILITY
    body = "Hi {{1}}, see you at {{2}}."
    status = MessageTemplate.Status.APPROVED
