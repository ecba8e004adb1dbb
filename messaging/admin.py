from django.contrib import admin
from django.http import Http404
from django.shortcuts import get_object_or_404
from django.urls import path, reverse
from django.utils.html import format_html

from messaging.api.views import media_response
from messaging.models import (
    Conversation,
    Message,
    MessageTemplate,
    OrphanStatus,
    WebhookEvent,
)
from messaging.selectors import media_open


class MessageInline(admin.TabularInline):
    model = Message
    fields = ("created_at", "direction", "type", "body", "status", "media_status")
    readonly_fields = fields
    extra = 0
    can_delete = False
    show_change_link = True
    ordering = ("-created_at",)
    max_num = 0


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = (
        "customer_name",
        "customer_username",
        "customer_wa_id",
        "customer_user_id",
        "salon",
        "last_message_at",
    )
    list_filter = ("salon",)
    search_fields = (
        "customer_name",
        "customer_wa_id",
        "customer_user_id",
        "customer_username",
    )
    raw_id_fields = ("salon",)
    readonly_fields = ("id", "created_at", "last_message_at", "last_inbound_at")
    inlines = [MessageInline]


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = (
        "created_at",
        "direction",
        "type",
        "status",
        "short_body",
        "conversation",
    )
    list_filter = ("direction", "status", "type", "salon")
    search_fields = (
        "wamid",
        "body",
        "conversation__customer_wa_id",
        "conversation__customer_name",
        "conversation__customer_username",
    )
    raw_id_fields = ("salon", "conversation", "reply_to", "reaction_to")
    readonly_fields = (
        "id",
        "sent_at",
        "delivered_at",
        "read_at",
        "failed_at",
        "error",
        "media_preview",
        "media_status",
        "media_file",
        "media_mime_type",
        "media_size",
        "media_sha256",
        "media_error",
    )
    date_hierarchy = "created_at"

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return (obj.body[:60] + "…") if len(obj.body) > 60 else obj.body

    @admin.display(description="media")
    def media_preview(self, obj: Message) -> str:
        """Images inline (an <img> never runs what it loads); other files as a
        download link."""
        if obj.media_status != Message.MediaStatus.STORED:
            return obj.media_error or obj.media_status or "-"
        url = reverse("admin:messaging_message_media", args=[obj.pk])
        if obj.media_mime_type in ("image/jpeg", "image/png", "image/webp"):
            return format_html(
                '<a href="{}"><img src="{}" alt="{}" style="max-width:320px;'
                'max-height:320px"></a>',
                url,
                url,
                obj.body,
            )
        return format_html('<a href="{}">download ({})</a>', url, obj.media_mime_type)

    def get_urls(self):
        media = self.admin_site.admin_view(self.media_view)
        return [
            path("<uuid:pk>/media/", media, name="messaging_message_media"),
            *super().get_urls(),
        ]

    def media_view(self, request, pk):
        message = get_object_or_404(Message, pk=pk)
        if not self.has_view_permission(request, message):
            raise Http404
        opened = media_open(message=message)
        if opened is None:
            raise Http404
        return media_response(message, opened)


@admin.register(MessageTemplate)
class MessageTemplateAdmin(admin.ModelAdmin):
    list_display = ("name", "language", "category", "status", "salon", "updated_at")
    list_filter = ("status", "category", "language")
    search_fields = ("name", "body", "salon__name")
    raw_id_fields = ("salon",)


@admin.register(WebhookEvent)
class WebhookEventAdmin(admin.ModelAdmin):
    """The inbox, for operators: what Meta sent and what became of it."""

    list_display = ("id", "received_at", "status", "attempts", "short_error")
    list_filter = ("status",)
    search_fields = ("body", "last_error")
    date_hierarchy = "received_at"
    readonly_fields = (
        "received_at",
        "body",
        "status",
        "attempts",
        "last_error",
        "processed_at",
        "redriven_at",
    )

    @admin.display(description="last error")
    def short_error(self, obj: WebhookEvent) -> str:
        return obj.last_error[:80]

    def has_add_permission(self, request) -> bool:
        return False


@admin.register(OrphanStatus)
class OrphanStatusAdmin(admin.ModelAdmin):
    list_display = ("wamid", "status", "timestamp", "salon", "created_at")
    list_filter = ("status",)
    search_fields = ("wamid",)
    raw_id_fields = ("salon",)
    readonly_fields = ("salon", "wamid", "status", "timestamp", "payload", "created_at")
