from rest_framework import serializers

from bookings.models import Booking, Salon
from saas.tenancy import SalonField


class SalonSerializer(serializers.ModelSerializer):
    class Meta:
        model = Salon
        fields = [
            "id",
            "name",
            "whatsapp_phone_number_id",
            "timezone",
            "language",
            "email",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        # Uniqueness is enforced by the service (and the database), so a race
        # answers the same 400 as a sequential duplicate.
        extra_kwargs = {"whatsapp_phone_number_id": {"validators": []}}


class BookingSerializer(serializers.ModelSerializer):
    salon = SalonField()

    class Meta:
        model = Booking
        fields = [
            "id",
            "salon",
            "customer_name",
            "customer_phone",
            "customer_email",
            "service_name",
            "start_at",
            "status",
            "metadata",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "metadata", "created_at", "updated_at"]


class BookingUpdateSerializer(BookingSerializer):
    class Meta(BookingSerializer.Meta):
        read_only_fields = [*BookingSerializer.Meta.read_only_fields, "salon"]


class DashboardStatsSerializer(serializers.Serializer):
    """The shape of GET /api/dashboard/stats/ (documentation only)."""

    bookings_total = serializers.IntegerField()
    bookings_today = serializers.IntegerField(
        help_text="Starting today in each salon's own time zone."
    )
    bookings_upcoming = serializers.IntegerField(
        help_text="Pending or confirmed, starting from now."
    )
    bookings_by_status = serializers.DictField(child=serializers.IntegerField())
    conversations_total = serializers.IntegerField()
    messages_inbound = serializers.IntegerField()
    messages_outbound = serializers.IntegerField()
    messages_failed = serializers.IntegerField()
    delivery_rate = serializers.FloatField(
        allow_null=True,
        help_text="Delivered or read over outbound messages sent, delivered, read "
        "or failed; null before any was sent.",
    )
    reminders_sent = serializers.IntegerField()
    generated_at = serializers.DateTimeField()
