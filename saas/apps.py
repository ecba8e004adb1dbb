from django.apps import AppConfig


class SaasConfig(AppConfig):
    name = "saas"
    verbose_name = "Platform"

    def ready(self) -> None:
        from saas import checks  # noqa: F401  (registers the system checks)
