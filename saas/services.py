"""Write helpers shared by the apps' services."""

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction


def model_save_validated(
    instance: models.Model, *, integrity_errors: dict[str, str]
) -> models.Model:
    """Validate and save ``instance``; a unique constraint lost to a concurrent
    insert (the database decides, not a check-then-insert) becomes the same
    field errors a sequential duplicate gets."""
    instance.full_clean(validate_constraints=False)
    try:
        with transaction.atomic():
            instance.save()
    except IntegrityError as exc:
        raise ValidationError(integrity_errors) from exc
    return instance
