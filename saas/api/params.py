import uuid

from rest_framework.exceptions import ValidationError


def uuid_query_param(request, name: str) -> uuid.UUID | None:
    """The UUID in ``?name=``, None when absent, a 400 when malformed."""
    raw = request.query_params.get(name)
    if not raw:
        return None
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ValidationError({name: f"{raw!r} is not a valid UUID."}) from None


def choice_query_param(request, name: str, choices: list[str]) -> str | None:
    raw = request.query_params.get(name)
    if not raw:
        return None
    if raw not in choices:
        raise ValidationError({name: f"Expected one of {', '.join(choices)}."})
    return raw
