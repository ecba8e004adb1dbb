"""The product's URLs plus /bench/floor/: an authenticated DRF view that does no
work, the floor every API answer costs."""

from django.urls import path
from rest_framework.response import Response
from rest_framework.views import APIView

from saas.urls import urlpatterns as product_urlpatterns


class FloorView(APIView):
    def get(self, request):
        return Response({"ok": True})


urlpatterns = [
    path("bench/floor/", FloorView.as_view(), name="bench-floor"),
    *product_urlpatterns,
]
