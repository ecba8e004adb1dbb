from django.contrib import admin

from bookings.models import Booking, Salon


@admin.register(Salon)
class SalonAdmin(admin.ModelAdmin):
    list_display = (
        "name",
        "owner",
        "whatsapp_phone_number_id",
        "timezone",
        "email",
        "created_at",
    )
    list_filter = ("timezone",)
    search_fields = ("name", "whatsapp_phone_number_id", "email", "owner__username")
    raw_id_fields = ("owner",)
    readonly_fields = ("id", "created_at", "updated_at")


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    list_display = (
        "customer_name",
        "service_name",
        "salon",
        "start_at",
        "status",
        "customer_phone",
    )
    list_filter = ("status", "salon", "start_at")
    search_fields = (
        "customer_name",
        "customer_phone",
        "customer_email",
        "service_name",
        "id",
    )
    date_hierarchy = "start_at"
    raw_id_fields = ("salon",)
    readonly_fields = ("id", "metadata", "created_at", "updated_at")
