import logging
import mimetypes
import secrets

from django.conf import settings
from django.db import DatabaseError
from django.http import FileResponse, Http404, HttpResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_http_methods
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response

from messaging import outbound, selectors, services
from messaging.api.ingest import Refused, webhook_body_check, webhook_length_check
from messaging.api.serializers import (
    ConversationSerializer,
    MessageCreateSerializer,
    MessageSerializer,
    TemplateSerializer,
    TemplateUpdateSerializer,
)
from messaging.cache import conversation_cached_for, template_cached_for
from messaging.inbox_commit import group_commit
from messaging.models import Message
from messaging.selectors import media_open
from saas.api.params import uuid_query_param

logger = logging.getLogger(__name__)


def media_response(message: Message, opened) -> FileResponse:
    """A customer's file, never rendered or sniffed as anything but what it
    was stored as: an attachment, no MIME sniffing, a sandboxing CSP."""
    extension = mimetypes.guess_extension(message.media_mime_type) or ".bin"
    response = FileResponse(
        opened,
        as_attachment=True,
        filename=f"{message.type}-{message.pk}{extension}",
        content_type=message.media_mime_type or "application/octet-stream",
    )
    response["X-Content-Type-Options"] = "nosniff"
    response["Content-Security-Policy"] = "default-src 'none'; sandbox"
    response["Cache-Control"] = "private, max-age=300"
    return response


SALON_FILTER = OpenApiParameter("salon", str, description="Only this salon (UUID).")


@extend_schema_view(list=extend_schema(parameters=[SALON_FILTER]))
class ConversationViewSet(viewsets.ReadOnlyModelViewSet):
    lookup_value_converter = "uuid"
    serializer_class = ConversationSerializer

    def get_queryset(self):
        salon_id = (
            uuid_query_param(self.request, "salon") if self.action == "list" else None
        )
        return selectors.conversation_list(user=self.request.user, salon_id=salon_id)

    def retrieve(self, request, *args, **kwargs):
        """Served from ``conversation:{id}`` once cached (the seed's read cache)."""
        conversation = conversation_cached_for(
            user=request.user, conversation_id=kwargs["pk"]
        )
        if conversation is None:
            return super().retrieve(request, *args, **kwargs)
        return Response(self.get_serializer(conversation).data)

    @extend_schema(responses=MessageSerializer(many=True))
    @extend_schema(
        methods=["POST"],
        request=MessageCreateSerializer,
        responses={202: MessageSerializer},
        description="Queue a free-text reply, sent on whatsapp:outbound. Refused "
        "(400) outside WhatsApp's 24-hour customer-service window.",
    )
    @action(detail=True, methods=["get", "post"], serializer_class=MessageSerializer)
    def messages(self, request, pk=None):
        conversation = self.get_object()
        if request.method == "POST":
            serializer = MessageCreateSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            message = outbound.message_send_text(
                conversation=conversation, text=serializer.validated_data["text"]
            )
            return Response(
                MessageSerializer(message).data, status=status.HTTP_202_ACCEPTED
            )
        messages = selectors.message_list(
            user=request.user, conversation_id=conversation.pk
        )
        page = self.paginate_queryset(messages)
        return self.get_paginated_response(MessageSerializer(page, many=True).data)


class MessageViewSet(mixins.RetrieveModelMixin, viewsets.GenericViewSet):
    lookup_value_converter = "uuid"
    serializer_class = MessageSerializer

    def get_queryset(self):
        return selectors.message_list(user=self.request.user)

    @extend_schema(
        responses={(200, "application/octet-stream"): OpenApiTypes.BINARY},
        description="The downloaded photo, voice note, video, document or "
        "sticker, as an attachment; 404 for a message without stored media.",
    )
    @action(detail=True, methods=["get"])
    def media(self, request, pk=None):
        message = self.get_object()
        opened = media_open(message=message)
        if opened is None:
            raise Http404("This message has no stored media.")
        return media_response(message, opened)


@extend_schema_view(list=extend_schema(parameters=[SALON_FILTER]))
class TemplateViewSet(viewsets.ModelViewSet):
    lookup_value_converter = "uuid"

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return TemplateUpdateSerializer
        return TemplateSerializer

    def get_queryset(self):
        salon_id = (
            uuid_query_param(self.request, "salon") if self.action == "list" else None
        )
        return selectors.template_list(user=self.request.user, salon_id=salon_id)

    def retrieve(self, request, *args, **kwargs):
        """Served from ``template:{id}`` once cached (the seed's read cache)."""
        template = template_cached_for(user=request.user, template_id=kwargs["pk"])
        if template is None:
            return super().retrieve(request, *args, **kwargs)
        return Response(self.get_serializer(template).data)

    def perform_create(self, serializer):
        serializer.instance = services.template_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.template_update(
            template=serializer.instance, data=serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.template_delete(template=instance)


def _plain(text: str, status_code: int) -> HttpResponse:
    return HttpResponse(text, status=status_code, content_type="text/plain")


@csrf_exempt
@require_http_methods(["GET", "POST"])
def whatsapp_webhook(request):
    """Meta's webhook: GET is the verification handshake; POST is verified,
    stored and acknowledged at once (processing happens on whatsapp:webhook)."""
    if request.method == "GET":
        token = request.GET.get("hub.verify_token", "")
        expected = settings.WHATSAPP_VERIFY_TOKEN
        if (
            request.GET.get("hub.mode") == "subscribe"
            and expected
            and secrets.compare_digest(token.encode(), expected.encode())
        ):
            return _plain(request.GET.get("hub.challenge", ""), 200)
        return _plain("verification failed", 403)

    # The same checks and group commit as the lean path (messaging/api/ingest.py,
    # which answers this POST in front of Django when served by saas.wsgi).
    try:
        webhook_length_check(request.META.get("CONTENT_LENGTH"))
        with group_commit.arriving() as arrival:
            # At most one byte past the limit: a chunked body has no length.
            body = request.read(settings.WEBHOOK_MAX_BODY_BYTES + 1)
            text = webhook_body_check(body, request.headers.get("X-Hub-Signature-256"))
            arrival.store(text)
    except Refused as refused:
        return _plain(refused.text, refused.status)
    except DatabaseError:
        logger.exception("Webhook not stored; answering 503 so Meta retries")
        return _plain("storage unavailable, retry later", 503)
    return _plain("EVENT_RECEIVED", 200)
