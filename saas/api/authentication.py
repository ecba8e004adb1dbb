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

from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils.translation import gettext_lazy as _
from drf_spectacular.contrib.rest_framework_simplejwt import SimpleJWTScheme
from rest_framework.exceptions import AuthenticationFailed
from rest_framework_simplejwt.authentication import JWTAuthentication
from rest_framework_simplejwt.exceptions import InvalidToken
from rest_framework_simplejwt.settings import api_settings
from rest_framework_simplejwt.utils import get_md5_hash_password

from saas.cache import cache_service

USER_TTL = "USER_CACHE_TTL_SECONDS"


def user_key(user_id) -> str:
    return f"user:{user_id}"


def user_cached(user_id):
    """The user with this id (password deferred), or None if there is none."""

    def load():
        user = (
            get_user_model()
            .objects.filter(**{api_settings.USER_ID_FIELD: user_id})
            .first()
        )
        if user is not None:
            # What tokens carry (CHECK_REVOKE_TOKEN), so a cached request needs
            # no database; the hash itself is deferred again, never cached.
            user.revoke_hash = get_md5_hash_password(user.password)
            del user.__dict__["password"]
        return user

    return cache_service.get_or_set(user_key(user_id), load, USER_TTL)


def user_cache_invalidate_on_commit(sender, instance, **kwargs) -> None:
    """post_save / post_delete of the user model (connected in SaasConfig)."""
    key = user_key(getattr(instance, api_settings.USER_ID_FIELD))
    transaction.on_commit(lambda: cache_service.invalidate(key), robust=True)


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
