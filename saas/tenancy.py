"""Tenant scoping, in one place every view uses.

A user sees the salons they own and what belongs to them; staff see all.
Anything else is a 404, never a 403 that would confirm it exists.
"""

from django.apps import apps
from django.db.models import QuerySet
from rest_framework import serializers


def may_see_salon_of(user, *, owner_id) -> bool:
    """The rule itself, for a salon already read (from a cache): its owner and
    staff see it."""
    return user.is_staff or (owner_id is not None and owner_id == user.pk)


def salons_for(user) -> QuerySet:
    """The salons ``user`` may see (the model is bookings', found by its name:
    this module is below the apps)."""
    salons = apps.get_model("bookings", "Salon").objects.all()
    if user.is_staff:
        return salons
    return salons.filter(owner=user)


def scope_to_user(queryset: QuerySet, user, *, salon_path: str) -> QuerySet:
    """Restrict ``queryset`` to rows whose salon (reached by ``salon_path``) the
    user may see. ``salon_path`` is "" for Salon itself."""
    if user.is_staff:
        return queryset
    owner_lookup = f"{salon_path}__owner" if salon_path else "owner"
    return queryset.filter(**{owner_lookup: user})


class TenantScopedMixin:
    """For viewsets: every queryset goes through scope_to_user."""

    salon_path = "salon"

    def get_queryset(self):
        return scope_to_user(
            super().get_queryset(), self.request.user, salon_path=self.salon_path
        )


class SalonField(serializers.PrimaryKeyRelatedField):
    """A salon reference limited to the caller's salons: another tenant's id
    reads as "does not exist"."""

    def get_queryset(self):
        return salons_for(self.context["request"].user)
