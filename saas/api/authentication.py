"""JWT authentication with the user read through the cache.

simplejwt looks the token's user up in the database on every request: with
Django's connection health check that is two round trips before any view runs.
Here the user comes from ``user:{id}`` (``USER_CACHE_TTL_SECONDS``), so an API
call the cache answers touches no database at all.

The cached user has its password deferred: the hash never reaches Redis, a
read of it loads it from the database, and ``save()`` on such an instance
writes only the loaded fields, so it cannot clobber the password. Saving or
deleting a user invalidates its key after commit, so deactivation and staff
changes apply to the next request; writes that bypass the signals (queryset
``update()``) are bounded by the TTL.
"""

from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings

from saas.user_cache import user_cached


class CachedUserJWTAuthentication(JWTAuthentication):
    """simplejwt's JWTAuthentication, the same checks, the user from the cache."""

    def get_user(self, validated_token):
        try:
            user_id = validated_token[api_settings.USER_ID_CLAIM]
        except KeyError as exc:
            raise InvalidToken(
                _("Token contained no recognizable user identification")
            ) from exc
        user = user_cached(user_id)
        if user is None:
            raise AuthenticationFailed(_("User not found"), code="user_not_found")
        if api_settings.CHECK_USER_IS_ACTIVE and not user.is_active:
            raise AuthenticationFailed(_("User is inactive"), code="user_inactive")
        if api_settings.CHECK_REVOKE_TOKEN and validated_token.get(
            api_settings.REVOKE_TOKEN_CLAIM
        ) != getattr(user, "revoke_hash", None):
            raise AuthenticationFailed(
                _("The user's password has been changed."), code="password_changed"
            )
        return user


class CachedUserJWTScheme(SimpleJWTScheme):
    """OpenAPI: the same bearer JWT scheme as simplejwt's (registered on import)."""

    target_class = CachedUserJWTAuthentication
