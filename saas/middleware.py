"""Refuse oversized bodies before anything reads them."""

from django.conf import settings
from django.http import JsonResponse


class RequestBodyLimitMiddleware:
    """413 for a declared body over the limit of its path: the webhook takes up
    to WEBHOOK_MAX_BODY_BYTES (Meta sends up to 3 MB), everything else
    REQUEST_MAX_BODY_BYTES. Django's own DATA_UPLOAD_MAX_MEMORY_SIZE only
    guards request.body/POST, not the stream DRF's parsers read."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        limit = (
            settings.WEBHOOK_MAX_BODY_BYTES
            if request.path.startswith("/webhooks/")
            else settings.REQUEST_MAX_BODY_BYTES
        )
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse({"detail": "Invalid Content-Length."}, status=400)
        if length > limit:
            return JsonResponse(
                {"detail": f"Request body too large (limit {limit} bytes)."},
                status=413,
            )
        return self.get_response(request)
