"""Demo data for `make run`, loaded once: an owner, a salon, templates, bookings."""

import secrets
from datetime import timedelta
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand
from django.db import transaction
from django.utils import timezone

from bookings import services as booking_services
from bookings.models import Salon
from messaging import services as messaging_services
from messaging.models import MessageTemplate

DEMO_USERNAME = "demo"
DEMO_PHONE_NUMBER_ID = "106540352242922"  # the fixtures' test salon


class Command(BaseCommand):
    help = "Create the demo owner, salon, templates and bookings once; print the login."

    def handle(self, *args, **options):
        credentials = Path(settings.VAR_DIR) / "demo-credentials.txt"
        User = get_user_model()
        if not User.objects.filter(username=DEMO_USERNAME).exists():
            password = secrets.token_urlsafe(12)
            self._create(User, password)
            credentials.parent.mkdir(exist_ok=True)
            credentials.write_text(f"{DEMO_USERNAME}:{password}\n")
        login = (
            credentials.read_text().strip()
            if credentials.exists()
            else "(created elsewhere)"
        )
        self.stdout.write(
            f"demo: log in at /admin/ or POST /api/auth/token/ as {login}"
        )

    @transaction.atomic
    def _create(self, User, password: str) -> None:
        owner = User.objects.create_user(
            username=DEMO_USERNAME,
            email="demo@example.com",
            password=password,
            is_staff=True,
            is_superuser=True,
        )
        salon = Salon.objects.filter(
            whatsapp_phone_number_id=DEMO_PHONE_NUMBER_ID
        ).first()
        if salon is None:
            salon = booking_services.salon_create(
                owner=owner,
                name="Demo Hair Studio",
                whatsapp_phone_number_id=DEMO_PHONE_NUMBER_ID,
                timezone="Europe/Madrid",
                email="studio@example.com",
            )
        messaging_services.template_create(
            salon=salon,
            name=settings.WHATSAPP_REMINDER_TEMPLATE,
            category=MessageTemplate.Category.UTILITY,
            body="Hi {{1}}, a reminder of your {{2}} on {{3}}. Reply to change it.",
            status=MessageTemplate.Status.APPROVED,
        )
        now = timezone.now()
        for days, name, service in (
            (1, "Maria Gomez", "Haircut"),
            (2, "Priya Raman", "Colour"),
            (5, "Dana Kim", "Manicure"),
        ):
            booking_services.booking_create(
                salon=salon,
                customer_name=name,
                customer_phone="+16505551234",
                customer_email="",
                service_name=service,
                start_at=(now + timedelta(days=days)).replace(
                    minute=0, second=0, microsecond=0
                ),
            )
