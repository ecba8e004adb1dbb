from rest_framework.routers import SimpleRouter

from bookings.api.views import BookingViewSet, SalonViewSet

router = SimpleRouter(trailing_slash=True, use_regex_path=False)
router.register("salons", SalonViewSet, basename="salon")
router.register("bookings", BookingViewSet, basename="booking")
urlpatterns = router.urls
