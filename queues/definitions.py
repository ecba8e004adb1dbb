"""The queues, their aliases, retry policies and the priority scale.

Defined once here and imported everywhere else (tasks, routes, workers, the
queue page, the admin API).
"""

from dataclasses import dataclass
from enum import IntEnum

from django.conf import settings


class Priority(IntEnum):
    """The seed's scale: 10 is the most urgent."""

    CRITICAL = 10
    MESSAGE_STATUS = 8
    REMINDER = 7
    EMAIL = 7
    WEBHOOK = 5
    LOW = 3
    BACKGROUND = 1


#: Celery's Redis transport serves 0 first; we give it ten real levels.
CELERY_PRIORITY_STEPS = list(range(10))


def celery_priority(priority: int) -> int:
    """Map the seed's 1..10 (10 urgent) onto Celery's Redis 0..9 (0 urgent)."""
    clamped = min(max(int(priority), Priority.BACKGROUND), Priority.CRITICAL)
    return Priority.CRITICAL - clamped


def seed_priority(celery_value: int | None) -> int:
    """The inverse of celery_priority, for display."""
    if celery_value is None:
        return Priority.WEBHOOK
    return Priority.CRITICAL - int(celery_value)


@dataclass(frozen=True)
class QueueSpec:
    name: str
    alias: str
    work: str
    concurrency_setting: str
    attempts_setting: str | None
    attempts_default: int
    backoff_seconds: int
    priority: int

    @property
    def concurrency(self) -> int:
        return getattr(settings, self.concurrency_setting)

    @property
    def attempts(self) -> int:
        if self.attempts_setting:
            return getattr(settings, self.attempts_setting, self.attempts_default)
        return self.attempts_default

    @property
    def max_retries(self) -> int:
        return self.attempts - 1

    def may_retry(self, attempts_made: int) -> bool:
        """The one attempt rule: a job (or a row a job works on) that has
        made ``attempts_made`` attempts may try again while under ``attempts``."""
        return attempts_made < self.attempts

    def retry_delay(self, retries: int) -> int:
        """Exponential backoff: base, 2*base, 4*base, ..."""
        return self.backoff_seconds * (2**retries)

    @property
    def longest_retry_delay(self) -> int:
        return self.retry_delay(max(self.max_retries - 1, 0))


WEBHOOK = QueueSpec(
    name="whatsapp:webhook",
    alias="webhook",
    work="turn a stored webhook into conversations/messages; fan statuses out",
    concurrency_setting="WEBHOOK_QUEUE_CONCURRENCY",
    attempts_setting="QUEUE_RETRY_ATTEMPTS",
    attempts_default=3,
    backoff_seconds=2,
    priority=Priority.WEBHOOK,
)
MESSAGE_STATUS = QueueSpec(
    name="whatsapp:message-status",
    alias="message-status",
    work="apply a delivery status to a message",
    concurrency_setting="MESSAGE_QUEUE_CONCURRENCY",
    attempts_setting=None,
    attempts_default=5,
    backoff_seconds=2,
    priority=Priority.MESSAGE_STATUS,
)
REMINDER = QueueSpec(
    name="booking:reminder",
    alias="reminder",
    work="send a due booking reminder over WhatsApp",
    concurrency_setting="BOOKING_QUEUE_CONCURRENCY",
    attempts_setting="QUEUE_RETRY_ATTEMPTS",
    attempts_default=3,
    backoff_seconds=2,
    priority=Priority.REMINDER,
)
EMAIL = QueueSpec(
    name="notification:email",
    alias="email",
    work="render and send an e-mail",
    concurrency_setting="EMAIL_QUEUE_CONCURRENCY",
    attempts_setting="QUEUE_RETRY_ATTEMPTS",
    attempts_default=3,
    backoff_seconds=5,
    priority=Priority.EMAIL,
)
OUTBOUND = QueueSpec(
    name="whatsapp:outbound",
    alias="outbound",
    work="send a message a staff member wrote",
    concurrency_setting="OUTBOUND_QUEUE_CONCURRENCY",
    attempts_setting="QUEUE_RETRY_ATTEMPTS",
    attempts_default=3,
    backoff_seconds=2,
    priority=Priority.WEBHOOK,
)

MEDIA = QueueSpec(
    name="whatsapp:media",
    alias="media",
    work="download an inbound photo, voice note, video, document or sticker "
    "before its URL expires",
    concurrency_setting="MEDIA_QUEUE_CONCURRENCY",
    attempts_setting=None,
    attempts_default=5,
    backoff_seconds=2,
    # Meta's media URLs expire within minutes: as urgent as the webhooks that
    # announce them.
    priority=Priority.WEBHOOK,
)

QUEUES: tuple[QueueSpec, ...] = (
    WEBHOOK,
    MESSAGE_STATUS,
    REMINDER,
    EMAIL,
    OUTBOUND,
    MEDIA,
)
_BY_NAME = {spec.name: spec for spec in QUEUES} | {spec.alias: spec for spec in QUEUES}


class UnknownQueue(LookupError):
    pass


class RetryableJobError(Exception):
    """A transient failure: the job is retried with its queue's backoff."""


class PermanentJobError(Exception):
    """A failure no retry can fix: the job fails at once with this message."""


def queue_spec(name_or_alias: str) -> QueueSpec:
    """Accept a full queue name (whatsapp:webhook) or its alias (webhook)."""
    try:
        return _BY_NAME[name_or_alias]
    except KeyError:
        raise UnknownQueue(name_or_alias) from None


def route_task(name, args, kwargs, options, task=None, **kw) -> dict | None:
    """Celery's task_routes: a task goes to the queue its decorator names, at
    that queue's default priority (an explicit priority at publish time wins)."""
    spec = getattr(task, "queue_spec", None)
    if spec is None:
        return None
    return {"queue": spec.name, "priority": celery_priority(spec.priority)}


def queue_task_options(spec: QueueSpec, **extra) -> dict:
    """Decorator options for a task of this queue: its route and retries.

    Tasks opt into automatic retries by raising RetryableJobError; anything
    else fails the job at once.
    """
    options = {
        "queue_spec": spec,
        "max_retries": spec.max_retries,
        "autoretry_for": (RetryableJobError,),
        "retry_backoff": spec.backoff_seconds,
        "retry_backoff_max": spec.longest_retry_delay,
        "retry_jitter": False,
        "acks_late": True,
        "reject_on_worker_lost": True,
        # Checks the queue's pause flag as the job is about to start.
        "Request": "queues.requests:PauseAwareRequest",
    }
    options.update(extra)
    return options


def queue_page_prefix(dashboard_path: str) -> str | None:
    """QUEUE_DASHBOARD_PATH inside the admin site ("/admin/queues" -> "queues/"),
    or None if it is not under /admin/: the page lives in the admin (its login,
    its look), and system check saas.E002 refuses such a path."""
    head, _, rest = dashboard_path.strip("/").partition("/")
    return f"{rest}/" if head == "admin" and rest else None
