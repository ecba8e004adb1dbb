from django.apps import AppConfig


class SaasConfig(AppConfig):
    name = "saas"
    verbose_name = "Platform"

    def ready(self) -> None:
        from django.contrib.auth import get_user_model
        from django.db.models.signals import post_delete, post_save

        from saas import checks  # noqa: F401  (registers the system checks)
        from saas.api.authentication import user_cache_invalidate_on_commit

        user_model = get_user_model()
        for signal in (post_save, post_delete):
            signal.connect(
                user_cache_invalidate_on_commit,
                sender=user_model,
                dispatch_uid=f"user-cache-{signal is post_save}",
            )
