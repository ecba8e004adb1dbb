from django.http import JsonResponse


def healthz(request):
    """Liveness: the process answers. Dependencies are /admin/queue/health's job."""
    return JsonResponse({"status": "ok"})
