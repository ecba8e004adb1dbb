"""Throttles keyed on what a client cannot choose.

A client's address is the one the trusted proxies saw: ``NUM_PROXIES`` (0 by
default, so ``REMOTE_ADDR`` counts; with N proxies, the N-th address from the
right of ``X-Forwarded-For``). A random ``X-Forwarded-For`` therefore lifts no
limit. On top of the per-address limit, the token endpoint counts attempts per
username and the reset endpoint per target address, so spreading requests over
many addresses neither guesses one password faster nor floods one mailbox.
Rates are ``REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"]`` entries; a scope
without a rate is not throttled.
"""

from collections.abc import Mapping

from django.core.cache import caches
from rest_framework.settings import api_settings
from rest_framework.throttling import SimpleRateThrottle


def _field(request, name: str) -> str:
    """A request body's string field, "" when the body is not an object."""
    data = getattr(request, "data", None)
    value = data.get(name) if isinstance(data, Mapping) else None
    return value.strip() if isinstance(value, str) else ""


class _Throttle(SimpleRateThrottle):
    """A DRF throttle on the ``throttle`` cache alias, rate read per request."""

    @property
    def cache(self):
        return caches["throttle"]

    def get_rate(self):
        return api_settings.DEFAULT_THROTTLE_RATES.get(self.scope)

    def key_for(self, ident: str) -> str:
        return self.cache_format % {"scope": self.scope, "ident": ident}


class AuthRateThrottle(_Throttle):
    """Per client address, shared by the register, token and reset endpoints."""

    scope = "auth"

    def get_cache_key(self, request, view):
        return self.key_for(self.get_ident(request))


class _FieldThrottle(_Throttle):
    """Per value of one request field (case-folded); absent field, no limit."""

    field = ""

    def get_cache_key(self, request, view):
        value = _field(request, self.field)
        return self.key_for(value.casefold()[:254]) if value else None


class UsernameRateThrottle(_FieldThrottle):
    """Password guesses against one account, from any number of addresses."""

    scope = "auth_username"
    field = "username"


class ResetAddressRateThrottle(_FieldThrottle):
    """Reset e-mails to one mailbox, whoever asks."""

    scope = "password_reset_address"
    field = "email"


class BookingEmailRateThrottle(_Throttle):
    """Bookings that send e-mail, per tenant: the platform is no mail relay."""

    scope = "booking_email"

    def get_cache_key(self, request, view):
        if request.method not in ("POST", "PUT", "PATCH"):
            return None
        if not _field(request, "customer_email"):
            return None
        return self.key_for(str(request.user.pk))
