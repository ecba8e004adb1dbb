"""Secrets out of everything people see: job data, errors, tracebacks, logs.

Two rules, applied wherever job data or text about a job leaves the worker:

- by key: a value under a key that names a secret (``*token*``,
  ``*password*``, ``*secret*``, ``authorization``, ``*api_key*``) is replaced,
  however deep in the data it sits;
- by pattern, for free text (an exception's message, a traceback, a log line):
  ``key=value`` / ``"key": "value"`` pairs with such keys, and bearer
  credentials.

The product puts no secret in job data (a password-reset token is made by the
e-mail worker at send time); this is the second line of defence, for data an
operator or another service puts there.
"""

import re
from typing import Any

REDACTED = "[redacted]"

_SECRET_NAME = r"[\w-]*(?:token|password|passwd|secret|api[_-]?key)[\w-]*|authorization"
SECRET_KEY_RE = re.compile(rf"^(?:{_SECRET_NAME})$", re.IGNORECASE)

# "resetToken": "abc", 'password': 'x', token=abc, Authorization: Bearer abc
_PAIR_RE = re.compile(
    rf"""(?P<key>["']?(?:{_SECRET_NAME})["']?\s*[:=]\s*)"""
    r"""(?P<value>"[^"]*"|'[^']*'|(?:Bearer|Basic)\s+[^\s"',}&]+|[^\s"',}&]+)""",
    re.IGNORECASE,
)
_BEARER_RE = re.compile(r"\b(Bearer|Basic)\s+[A-Za-z0-9._~+/=-]{8,}", re.IGNORECASE)


def is_secret_key(key: Any) -> bool:
    return isinstance(key, str) and bool(SECRET_KEY_RE.match(key))


def redact_data(value: Any) -> Any:
    """A copy of JSON-shaped ``value`` with every secret-named key's value replaced."""
    if isinstance(value, dict):
        return {
            key: REDACTED if is_secret_key(key) else redact_data(item)
            for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return [redact_data(item) for item in value]
    return value


def has_secrets(value: Any) -> bool:
    if isinstance(value, dict):
        return any(is_secret_key(k) or has_secrets(v) for k, v in value.items())
    if isinstance(value, list | tuple):
        return any(has_secrets(item) for item in value)
    return False


def _replace_pair(match: re.Match) -> str:
    value = match.group("value")
    quote = value[0] if value[:1] in "\"'" else ""
    return f"{match.group('key')}{quote}{REDACTED}{quote}"


def redact_text(text: str) -> str:
    """Free text with secret-named pairs and bearer credentials replaced."""
    if not text:
        return text
    text = _PAIR_RE.sub(_replace_pair, text)
    return _BEARER_RE.sub(lambda m: f"{m.group(1)} {REDACTED}", text)
