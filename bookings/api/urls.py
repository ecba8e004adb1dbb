from django.urls import path
from rest_framework.routers import SimpleRouter

from bookings.api.views import BookingViewSet, DashboardStatsView, SalonViewSet

router = SimpleRouter(trailing_slash=True, use_regex_path=False)
router.register("salons", SalonViewSet, basename="salon")
router.register("bookings", BookingViewSet, basename="booking")
urlpatterns = [
    path("dashboard/stats/", DashboardStatsView.as_view(), name="dashboard-stats"),
    *router.urls,
]
