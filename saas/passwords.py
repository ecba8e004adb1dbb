"""Password-reset tokens: made only where the e-mail is written, never stored.

A token is ``<base64 user id>.<Django's one-time token>``: it stops working once
the password changes, and expires after ``PASSWORD_RESET_TIMEOUT``. The job
that sends the reset e-mail carries the user's id; the e-mail worker calls
``password_reset_token`` at send time, so no log row, job record, task event or
log line ever holds a token.
"""

from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.core.exceptions import ValidationError
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_decode, urlsafe_base64_encode


def password_reset_token(user) -> str:
    """One-time: it stops working once the password changes (or it expires)."""
    uid = urlsafe_base64_encode(force_bytes(user.pk))
    return f"{uid}.{default_token_generator.make_token(user)}"


def password_reset_user(token: str):
    """The active user a token was made for, or None."""
    User = get_user_model()
    uid, _, secret = token.partition(".")
    try:
        user = User.objects.get(pk=urlsafe_base64_decode(uid).decode())
    except (ValueError, TypeError, OverflowError, User.DoesNotExist):
        return None
    if not user.is_active or not default_token_generator.check_token(user, secret):
        return None
    return user


def password_reset_recipient(*, user_id, to: str):
    """The user a reset e-mail for ``user_id`` may go to at address ``to``: active,
    with a usable password, and ``to`` is their own address. None otherwise, so
    a job naming one user and another address mails nobody a token."""
    try:
        user = get_user_model().objects.filter(pk=user_id, is_active=True).first()
    except (ValueError, TypeError, ValidationError):
        return None
    if user is None or not user.has_usable_password():
        return None
    if (user.email or "").casefold() != (to or "").casefold():
        return None
    return user
