"""The project's admin site: Django's, with the queue page mounted in it (its
login, its look) when QUEUE_DASHBOARD_ENABLED. Installed as the default site
by saas.apps.AdminConfig."""

from django.conf import settings
from django.contrib import admin

from queues.admin_views import queue_admin_urls


class AdminSite(admin.AdminSite):
    def get_urls(self):
        urls = super().get_urls()
        if settings.QUEUE_DASHBOARD_ENABLED:
            return queue_admin_urls(self) + urls
        return urls
