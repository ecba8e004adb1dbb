from django.apps import AppConfig
from django.contrib.admin import apps as admin_apps


class SaasConfig(AppConfig):
    default = True  # the app "saas"; AdminConfig below is installed by path
    name = "saas"
    verbose_name = "Platform"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from saas import checks  # noqa: F401  (registers the system checks)
        from saas.user_cache import user_cache_invalidate_on_commit

        user_model = get_user_model()
        for signal in (post_save, post_delete):
            signal.connect(
                user_cache_invalidate_on_commit,
                sender=user_model,
                dispatch_uid=f"user-cache-{signal is post_save}",
            )


class AdminConfig(admin_apps.AdminConfig):
    """django.contrib.admin with the project's site (the queue page in it)."""

    default = False  # installed by its path in INSTALLED_APPS

    default_site = "saas.admin_site.AdminSite"
