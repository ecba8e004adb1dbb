from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_view
from rest_framework import status, viewsets
from rest_framework.decorators import action
from rest_framework.response import Response
from rest_framework.views import APIView

from bookings import selectors, services
from bookings.api.serializers import (
    BookingSerializer,
    BookingUpdateSerializer,
    DashboardStatsSerializer,
    SalonSerializer,
)
from bookings.cache import dashboard_stats_cached
from bookings.models import Booking
from bookings.salon_cache import salon_cached_for
from bookings.timeline import booking_timeline
from saas.api.params import choice_query_param, uuid_query_param
from saas.api.throttles import BookingEmailRateThrottle


class SalonViewSet(viewsets.ModelViewSet):
    lookup_value_converter = "uuid"
    serializer_class = SalonSerializer

    def get_queryset(self):
        return selectors.salon_list(user=self.request.user)

    def retrieve(self, request, *args, **kwargs):
        """Served from ``salon:{id}`` once cached (the seed's read cache)."""
        salon = salon_cached_for(user=request.user, salon_id=kwargs["pk"])
        if salon is None:
            return super().retrieve(request, *args, **kwargs)
        return Response(self.get_serializer(salon).data)

    def perform_create(self, serializer):
        serializer.instance = services.salon_create(
            owner=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.salon_update(
            salon=serializer.instance,
            data=serializer.validated_data,
            actor=self.request.user,
        )


@extend_schema_view(
    list=extend_schema(
        parameters=[
            OpenApiParameter(
                "salon", str, description="Only this salon's bookings (UUID)."
            ),
            OpenApiParameter("status", str, enum=Booking.Status.values),
        ]
    )
)
class BookingViewSet(viewsets.ModelViewSet):
    lookup_value_converter = "uuid"
    throttle_classes = [BookingEmailRateThrottle]

    def get_serializer_class(self):
        if self.action in ("update", "partial_update"):
            return BookingUpdateSerializer
        return BookingSerializer

    def get_queryset(self):
        if self.action != "list":
            return selectors.booking_list(user=self.request.user)
        return selectors.booking_list(
            user=self.request.user,
            salon_id=uuid_query_param(self.request, "salon"),
            status=choice_query_param(self.request, "status", Booking.Status.values),
        )

    def perform_create(self, serializer):
        serializer.instance = services.booking_create(
            actor=self.request.user, **serializer.validated_data
        )

    def perform_update(self, serializer):
        serializer.instance = services.booking_update(
            booking=serializer.instance, data=serializer.validated_data
        )

    def perform_destroy(self, instance):
        services.booking_delete(booking=instance)

    @extend_schema(request=None, responses=BookingSerializer)
    @action(detail=True, methods=["post"])
    def cancel(self, request, pk=None):
        booking = services.booking_cancel(booking=self.get_object())
        serializer = BookingSerializer(booking, context={"request": request})
        return Response(serializer.data, status=status.HTTP_200_OK)

    @extend_schema(responses=OpenApiTypes.OBJECT)
    @action(detail=True, methods=["get"])
    def timeline(self, request, pk=None):
        """E-mails, reminders and statuses of the booking in time order."""
        booking = self.get_object()
        return Response(
            {"booking": str(booking.pk), "events": booking_timeline(booking=booking)}
        )


class DashboardStatsView(APIView):
    """Dashboard numbers, served from the cache; ``X-Cache`` says hit or miss."""

    @extend_schema(
        parameters=[
            OpenApiParameter(
                "salon", str, description="Only this salon (UUID); default: all."
            )
        ],
        responses=DashboardStatsSerializer,
    )
    def get(self, request):
        fetched = dashboard_stats_cached(
            user=request.user, salon_id=uuid_query_param(request, "salon")
        )
        return Response(
            fetched.value, headers={"X-Cache": "hit" if fetched.hit else "miss"}
        )
