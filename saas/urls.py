from django.contrib import admin
from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerView

from messaging.api.views import whatsapp_webhook
from queues.metrics import metrics_view
from saas.api.auth import (
    PasswordResetConfirmView,
    PasswordResetView,
    RegisterView,
    ThrottledTokenObtainPairView,
    ThrottledTokenRefreshView,
)
from saas.views import healthz

api_patterns = [
    path("auth/register/", RegisterView.as_view(), name="auth-register"),
    path("auth/token/", ThrottledTokenObtainPairView.as_view(), name="auth-token"),
    path(
        "auth/token/refresh/",
        ThrottledTokenRefreshView.as_view(),
        name="auth-token-refresh",
    ),
    path(
        "auth/password-reset/",
        PasswordResetView.as_view(),
        name="auth-password-reset",
    ),
    path(
        "auth/password-reset/confirm/",
        PasswordResetConfirmView.as_view(),
        name="auth-password-reset-confirm",
    ),
    path("", include("bookings.api.urls")),
    path("", include("messaging.api.urls")),
    path("schema/", SpectacularAPIView.as_view(), name="schema"),
    path("docs/", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
]

urlpatterns = [
    path("healthz", healthz, name="healthz"),
    path("api/", include(api_patterns)),
    path("metrics", metrics_view, name="metrics"),
    path("admin/queue/", include("queues.api.urls")),
    path("admin/", admin.site.urls),
    path("webhooks/whatsapp/", whatsapp_webhook, name="whatsapp-webhook"),
]
