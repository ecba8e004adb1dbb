from django import forms
from django.contrib import admin
from django.core.exceptions import ValidationError
from django.utils.html import format_html, format_html_join

from bookings import services
from bookings.models import Booking, BookingReminder, Salon
from bookings.timeline import booking_timeline


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
    readonly_fields = (
        "id",
        "whatsapp_claimed_by",
        "whatsapp_claimed_at",
        "created_at",
        "updated_at",
    )

    def get_readonly_fields(self, request, obj=None):
        # Ownership never moves: the caches (dashboards per owner) and the
        # tenancy of every row below the salon assume it.
        if obj is not None:
            return ("owner", *self.readonly_fields)
        return self.readonly_fields

    def save_model(self, request, obj, form, change):
        """Through the services, like the API: a new salon welcomes its owner."""
        data = {
            name: form.cleaned_data[name] for name in services.SALON_EDITABLE_FIELDS
        }
        if change:
            saved = services.salon_update(salon=obj, data=data, actor=request.user)
        else:
            saved = services.salon_create(owner=obj.owner, **data)
        vars(obj).update(vars(saved))  # the admin goes on with obj


class BookingAdminForm(forms.ModelForm):
    class Meta:
        model = Booking
        fields = ["salon", *services.BOOKING_EDITABLE_FIELDS]

    def clean(self):
        cleaned = super().clean()
        if self.errors:
            return cleaned
        candidate = Booking(
            customer_phone=cleaned["customer_phone"],
            service_name=cleaned["service_name"],
            start_at=cleaned["start_at"],
        )
        start_changed = self.instance._state.adding or "start_at" in self.changed_data
        try:
            services.booking_check(candidate, start_changed=start_changed)
        except ValidationError as exc:
            self.add_error(None, exc)
        else:
            cleaned["customer_phone"] = candidate.customer_phone
        return cleaned


class BookingReminderInline(admin.TabularInline):
    model = BookingReminder
    extra = 0
    can_delete = False
    fields = ("kind", "status", "due_at", "send_by", "attempts", "reason", "sent_at")
    readonly_fields = fields

    def has_add_permission(self, request, obj=None) -> bool:
        return False


@admin.register(Booking)
class BookingAdmin(admin.ModelAdmin):
    form = BookingAdminForm
    inlines = [BookingReminderInline]
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
    readonly_fields = ("id", "metadata", "created_at", "updated_at", "timeline")

    @admin.display(description="Timeline")
    def timeline(self, obj):
        """E-mails, reminders and cancellation in time order (bookings/timeline.py)."""
        if obj is None or obj.pk is None:
            return "—"
        rows = format_html_join(
            "",
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            (
                (
                    event["at"].isoformat(timespec="seconds") if event["at"] else "",
                    event["kind"],
                    event["event"],
                    event.get("template") or event.get("reminder") or "",
                    event.get("reason") or "",
                )
                for event in booking_timeline(booking=obj)
            ),
        )
        return format_html(
            '<table id="booking-timeline"><thead><tr><th>When</th><th>What</th>'
            "<th>Event</th><th>Detail</th><th>Why</th></tr></thead><tbody>{}</tbody></table>",
            rows,
        )

    def save_model(self, request, obj, form, change):
        """The same service as the API: reminders, e-mails, rules."""
        data = {
            name: form.cleaned_data[name]
            for name in services.BOOKING_EDITABLE_FIELDS
            if name in form.cleaned_data
        }
        if change:
            saved = services.booking_update(booking=obj, data=data)
        else:
            saved = services.booking_create(salon=obj.salon, **data)
        vars(obj).update(vars(saved))  # the admin goes on with obj

    def get_inlines(self, request, obj):
        # The reminders are the service's to create, shown once they exist.
        return self.inlines if obj is not None else []


@admin.register(BookingReminder)
class BookingReminderAdmin(admin.ModelAdmin):
    list_display = (
        "booking",
        "kind",
        "status",
        "due_at",
        "attempts",
        "reason",
        "sent_at",
    )
    list_filter = ("status", "kind")
    search_fields = ("booking__id", "booking__customer_name", "wamid", "reason")
    date_hierarchy = "due_at"
    list_select_related = ("booking",)
    readonly_fields = [field.name for field in BookingReminder._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
