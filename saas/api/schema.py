"""OpenAPI generation: document the error answers every operation can give."""

from drf_spectacular.openapi import AutoSchema as SpectacularAutoSchema
from rest_framework.permissions import AllowAny
from rest_framework_simplejwt.views import TokenViewBase

ERROR_BODY = {
    "application/json": {
        "schema": {
            "type": "object",
            "description": '{"detail": "..."} or field errors {"field": ["..."]}',
            "additionalProperties": True,
        }
    }
}


class AutoSchema(SpectacularAutoSchema):
    def _error_statuses(self) -> dict[str, str]:
        view = self.view
        statuses = {
            "400": "Invalid input: field errors or a malformed query parameter.",
            "404": "Not found, or not yours.",
        }
        open_view = all(isinstance(p, AllowAny) for p in view.get_permissions())
        if not open_view or isinstance(view, TokenViewBase):
            statuses["401"] = "Missing, invalid or expired credentials."
        if not open_view:
            statuses["403"] = "Authenticated, but not allowed."
        if self.method in ("POST", "PUT", "PATCH"):
            statuses["413"] = "Request body too large."
            statuses["415"] = "Unsupported media type (send application/json)."
        if getattr(view, "throttle_classes", None):
            statuses["429"] = "Too many requests."
        return statuses

    def _get_response_bodies(self, direction="response"):
        responses = super()._get_response_bodies(direction)
        for status, description in self._error_statuses().items():
            responses.setdefault(
                status, {"description": description, "content": ERROR_BODY}
            )
        return responses
