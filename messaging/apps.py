from django.apps import AppConfig


class MessagingConfig(AppConfig):
    name = "messaging"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from messaging import signals
        from messaging.models import Conversation, Message, MessageTemplate

        # No post_delete receiver on Message: it would make every salon or
        # conversation delete load all their messages (Django cannot fast-delete
        # rows with receivers). Those deletes invalidate through their parents.
        post_save.connect(
            signals.invalidate_for_message, sender=Message, dispatch_uid="cache:msg"
        )
        for signal, suffix in ((post_save, "save"), (post_delete, "delete")):
            signal.connect(
                signals.invalidate_for_conversation,
                sender=Conversation,
                dispatch_uid=f"cache:conversation:{suffix}",
            )
            signal.connect(
                signals.invalidate_for_template,
                sender=MessageTemplate,
                dispatch_uid=f"cache:template:{suffix}",
            )
        signals.messages_changed.connect(
            signals.invalidate_for_messages_changed, dispatch_uid="cache:messages"
        )
        # Pacing and person-needed send errors on /metrics and the health page.
        from messaging.pacing import PacingCollector
        from messaging.send_errors import send_errors_health
        from queues.health import HEALTH_SECTIONS
        from queues.metrics import registry

        HEALTH_SECTIONS["whatsapp_send_errors"] = send_errors_health
        if not getattr(registry, "_pacing_registered", False):
            registry.register(PacingCollector())
            registry._pacing_registered = True
