"""Admin registration of the queues' rows (the operators' action log). The
queue page itself is queues/admin_views.py, mounted by saas/admin_site.py."""

from django.contrib import admin

from queues.models import QueueAction


@admin.register(QueueAction)
class QueueActionAdmin(admin.ModelAdmin):
    list_display = ("created_at", "actor_name", "action", "queue", "job_id", "count")
    list_filter = ("action", "queue")
    search_fields = ("job_id", "actor_name", "queue")
    readonly_fields = [f.name for f in QueueAction._meta.fields]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False
