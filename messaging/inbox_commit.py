"""Group commit of webhook bodies into the inbox (issue 17).

Concurrent webhooks in one process share one INSERT and one commit: while a
commit is in flight, the bodies that arrive meanwhile queue up, and the next
caller to find no commit in flight takes every queued body (its own included)
into the next one. Each caller returns only once the commit that carried its
body succeeded, and raises that commit's error otherwise: a failed commit
fails every body of its group and stores none of them (one statement in one
transaction). Nothing waits on a timer when a request is alone; when other
requests are still being verified, the committer waits up to
``WEBHOOK_GROUP_COMMIT_WINDOW_SECONDS`` for them to join.

The committing thread uses its own Django connection, so this works the same
under a threaded server and in tests; after commit it kicks the drain once for
the whole group (messaging/inbox.py).
"""

import logging
import threading
import time

import psycopg
from django.conf import settings
from django.db import (
    DatabaseError,
    InterfaceError,
    OperationalError,
    connection,
    transaction,
)
from django.utils import timezone

from messaging.inbox import webhook_drain_kick
from messaging.models import WebhookEvent

logger = logging.getLogger(__name__)

#: One statement whatever the group's size, so PostgreSQL can keep it prepared.
_INSERT_SQL = (
    "INSERT INTO messaging_webhookevent "
    "(received_at, body, status, attempts, last_error) "
    "SELECT %b, body, 'pending', 0, '' FROM unnest(%b::text[]) AS body"
)


class _Request:
    __slots__ = ("body", "done", "error")

    def __init__(self, body: str):
        self.body = body
        self.done = False
        self.error: BaseException | None = None


class GroupCommit:
    """Bodies from many threads, stored by shared commits."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._queue: list[_Request] = []
        self._committing = False
        self._arriving = 0  # requests being verified that will store a body
        self.groups = 0  # commits made (read by tests and benches)

    def arriving(self) -> "_Arrival":
        """Announce a request that is about to store a body, so a commit in
        preparation waits for it (``with committer.arriving(): ...``)."""
        return _Arrival(self)

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._queue)

    def store(self, body: str, *, arrival: "_Arrival | None" = None) -> None:
        """Store ``body`` in the inbox; returns after the commit that carried
        it, raises its error if that commit failed. With ``arrival``, the
        request stops being awaited as it joins the queue (one step, so a
        committer never sees it neither arriving nor queued)."""
        request = _Request(body)
        with self._cond:
            if arrival is not None and not arrival.joined:
                arrival.joined = True
                self._arriving -= 1
            self._queue.append(request)
            self._cond.notify_all()
            while not request.done and self._committing:
                self._cond.wait()
            if request.done:
                _raise_for(request.error)
                return
            self._committing = True
            self._wait_for_arrivals()
            group, self._queue = self._queue, []
        error = None
        try:
            _group_insert([r.body for r in group])
        except BaseException as exc:  # every request of the group gets it
            error = exc
        with self._cond:
            for member in group:
                member.done, member.error = True, error
            self._committing = False
            self.groups += 1
            self._cond.notify_all()
        if error is not None:
            raise error
        # Once per group; in autocommit (a web process) it runs at once.
        transaction.on_commit(webhook_drain_kick)

    def _wait_for_arrivals(self) -> None:
        """Under the lock: give requests still being verified a moment to join
        (no wait at all for a request that is alone)."""
        window = settings.WEBHOOK_GROUP_COMMIT_WINDOW_SECONDS
        deadline = time.monotonic() + window
        while self._arriving > 0 and window > 0:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return
            self._cond.wait(remaining)


def _raise_for(error: BaseException | None) -> None:
    """A member's view of its group's failure: its own exception object (the
    committer's is being raised in another thread)."""
    if error is None:
        return
    if isinstance(error, DatabaseError):
        raise DatabaseError(f"the group commit failed: {error!r}") from error
    raise RuntimeError(f"the group commit failed: {error!r}") from error


class _Arrival:
    """A request on its way to the queue (see GroupCommit.arriving)."""

    def __init__(self, committer: GroupCommit):
        self.committer = committer
        self.joined = False

    def __enter__(self) -> "_Arrival":
        with self.committer._cond:
            self.committer._arriving += 1
        return self

    def store(self, body: str) -> None:
        self.committer.store(body, arrival=self)

    def __exit__(self, *exc_info) -> None:
        with self.committer._cond:
            if not self.joined:  # refused before storing
                self.joined = True
                self.committer._arriving -= 1
                self.committer._cond.notify_all()


def _group_insert(bodies: list[str]) -> None:
    """One INSERT of every body, committed (autocommit: one statement is one
    transaction). Skips Django's per-request ``SELECT 1`` health check: a
    connection found dead is closed and the INSERT retried once on a fresh
    one. A retry after a commit whose answer was lost stores the bodies twice,
    which processing absorbs (one Message per wamid)."""
    try:
        _insert(bodies)
    except (InterfaceError, OperationalError):
        if connection.in_atomic_block:
            raise
        logger.warning("Webhook INSERT failed on a stale connection; retrying once")
        connection.close()
        _insert(bodies)


def _insert(bodies: list[str]) -> None:
    received_at = timezone.now()
    if connection.vendor != "postgresql":
        with transaction.atomic():
            WebhookEvent.objects.bulk_create(
                [WebhookEvent(received_at=received_at, body=b) for b in bodies]
            )
        return
    connection.health_check_done = True
    connection.ensure_connection()
    # psycopg's own cursor: server-side binding and a prepared statement (the
    # query text never changes), where Django's client-side binding would
    # quote every body into the SQL text in Python.
    with connection.wrap_database_errors:
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(_INSERT_SQL, [received_at, bodies], prepare=True)


#: The process's committer: every thread of a web process shares it.
group_commit = GroupCommit()
