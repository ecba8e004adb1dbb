"""Log filters: no secret reaches a log line (see saas/redaction.py)."""

import logging

from saas.redaction import redact_text


class RedactSecrets(logging.Filter):
    """Rewrites a record's message with secrets redacted; never drops it."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string is logging's problem, not ours
            return True
        redacted = redact_text(message)
        if redacted != message:
            record.msg, record.args = redacted, None
        return True
