from django.contrib import admin

from notifications.models import EmailLog


@admin.register(EmailLog)
class EmailLogAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "template",
        "to",
        "status",
        "attempts",
        "sent_at",
        "error",
    )
    list_filter = ("status", "template")
    search_fields = ("to", "subject", "id")
    date_hierarchy = "created_at"
    readonly_fields = [field.name for field in EmailLog._meta.fields]

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False
