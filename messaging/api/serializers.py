from django.urls import reverse
from rest_framework import serializers

from messaging.models import Conversation, Message, MessageTemplate
from saas.tenancy import SalonField


class ConversationSerializer(serializers.ModelSerializer):
    class Meta:
        model = Conversation
        fields = [
            "id",
            "salon",
            "customer_wa_id",
            "customer_name",
            "customer_user_id",
            "customer_username",
            "customer_parent_user_id",
            "last_message_at",
        ]
        read_only_fields = fields


class MessageSerializer(serializers.ModelSerializer):
    media_url = serializers.SerializerMethodField(
        help_text="The downloaded file (GET), once media_status is stored."
    )

    class Meta:
        model = Message
        fields = [
            "id",
            "conversation",
            "wamid",
            "direction",
            "type",
            "body",
            "content",
            "status",
            "error",
            "reply_to",
            "reaction_to",
            "sent_at",
            "delivered_at",
            "read_at",
            "failed_at",
            "created_at",
            "media_status",
            "media_mime_type",
            "media_size",
            "media_sha256",
            "media_error",
            "media_url",
        ]
        read_only_fields = fields

    def get_media_url(self, message: Message) -> str | None:
        if message.media_status != Message.MediaStatus.STORED:
            return None
        return reverse("message-media", kwargs={"pk": message.pk})


class MessageCreateSerializer(serializers.Serializer):
    text = serializers.CharField(max_length=4096, trim_whitespace=True)


class TemplateSerializer(serializers.ModelSerializer):
    salon = SalonField()

    class Meta:
        model = MessageTemplate
        fields = [
            "id",
            "salon",
            "name",
            "language",
            "category",
            "body",
            "status",
            "created_at",
            "updated_at",
        ]
        read_only_fields = ["id", "created_at", "updated_at"]
        validators = []  # (salon, name, language) uniqueness: the service answers it


class TemplateUpdateSerializer(TemplateSerializer):
    class Meta(TemplateSerializer.Meta):
        read_only_fields = [*TemplateSerializer.Meta.read_only_fields, "salon"]
