"""``user:{id}``: the API's users read through the cache (USER_CACHE_TTL_SECONDS),
password deferred so its hash never reaches Redis (the revoke hash tokens carry
does). Saving or deleting a user invalidates its key after commit (receiver
connected in SaasConfig)."""

from django.contrib.auth import get_user_model
from django.db import transaction
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
