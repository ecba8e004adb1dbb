"""Write helpers shared by the apps' services."""

from datetime import timedelta

from django.core.exceptions import ValidationError
from django.db import IntegrityError, models, transaction
from django.db.models import Q
from django.utils import timezone


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


def rows_claim_for_redrive(
    queryset: models.QuerySet,
    *,
    stale_field: str,
    older_than: timedelta,
    order_by: str,
    limit: int,
) -> list:
    """Rows of ``queryset`` (a model with ``redriven_at``) whose ``stale_field``
    is older than ``older_than`` and that were not re-driven within that time,
    marked re-driven now. Rows another re-drive holds are skipped (SKIP
    LOCKED), so concurrent beats never take the same row."""
    now = timezone.now()
    cutoff = now - older_than
    with transaction.atomic():
        rows = list(
            queryset.select_for_update(skip_locked=True)
            .filter(**{f"{stale_field}__lt": cutoff})
            .filter(Q(redriven_at__isnull=True) | Q(redriven_at__lt=cutoff))
            .order_by(order_by)[:limit]
        )
        queryset.model.objects.filter(pk__in=[row.pk for row in rows]).update(
            redriven_at=now
        )
    return rows
