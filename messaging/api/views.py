from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import mixins, viewsets
from rest_framework.decorators import action

from messaging import selectors, services
from messaging.api.serializers import (
    ConversationSerializer,
    MessageSerializer,
    TemplateSerializer,
    TemplateUpdateSerializer,
)
from saas.api.params import uuid_query_param

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

    @extend_schema(responses=MessageSerializer(many=True))
    @action(detail=True, methods=["get"], serializer_class=MessageSerializer)
    def messages(self, request, pk=None):
        conversation = self.get_object()
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

    def perform_create(self, serializer):
        serializer.instance = services.template_create(**serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.template_update(
            template=serializer.instance, data=serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.template_delete(template=instance)
