"""Celery signal handlers that keep a record of every job of every app.

Tasks need not cooperate: the record is written when a job is published (in the
publishing process, before the message exists, so a fast worker cannot race
it), when a worker starts it, and when it succeeds, fails or is retried. A
broken Redis never breaks the job: recording errors are logged and dropped.
"""

import atexit
import json
import logging
import threading
import time
from datetime import UTC, datetime
from typing import Any

import redis
from celery import signals

from queues import publish, records
from queues.definitions import seed_priority
from queues.record_writer import BatchingWriter
from saas.redaction import has_secrets, redact_data, redact_text

logger = logging.getLogger(__name__)

_running = threading.local()
#: Worker processes hand records to a background writer (never wait for Redis).
_writer = BatchingWriter()
_worker_process = False
LOG_LINE_MAX_CHARS = 2000


def _iso(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat()


def _safely(fn, *args, **kwargs) -> None:
    try:
        fn(*args, **kwargs)
    except redis.RedisError as exc:
        logger.warning("Job record not written (%s): %s", fn.__name__, exc)


class JobLogHandler(logging.Handler):
    """Collects what the running job logs; the lines are saved with its record."""

    def emit(self, record: logging.LogRecord) -> None:
        lines = getattr(_running, "lines", None)
        if lines is None or record.name.startswith("celery"):
            return
        if len(lines) < records.LOG_LINES_MAX:
            try:
                text = (
                    f"{_iso(record.created)} {record.levelname} {record.getMessage()}"
                )
            except Exception:  # a bad format string must not break the job
                text = f"{_iso(record.created)} {record.levelname} {record.msg!r}"
            lines.append(redact_text(text)[:LOG_LINE_MAX_CHARS])


_log_handler = JobLogHandler(level=logging.INFO)


def _install_log_handler() -> None:
    root = logging.getLogger()
    if _log_handler not in root.handlers:
        root.addHandler(_log_handler)


def dump_data(args: Any, kwargs: Any) -> dict[str, str]:
    """The job's data as stored: JSON, secrets redacted by key (and flagged: such
    a record cannot be retried), cut (and flagged) past DATA_MAX_CHARS."""
    redacted = has_secrets(args) or has_secrets(kwargs)
    if redacted:
        args, kwargs = redact_data(args), redact_data(kwargs)
    args_json = json.dumps(args, default=str)
    kwargs_json = json.dumps(kwargs, default=str)
    truncated = len(args_json) + len(kwargs_json) > records.DATA_MAX_CHARS
    if truncated:
        args_json = args_json[: records.DATA_MAX_CHARS // 2]
        kwargs_json = kwargs_json[: records.DATA_MAX_CHARS // 2]
    return {
        "args": args_json,
        "kwargs": kwargs_json,
        "truncated": "1" if truncated else "",
        "redacted": "1" if redacted else "",
    }


SALON_KEYS = ("salon_id", "salonId", "salon")


def salon_of(args: Any, kwargs: Any) -> str:
    """The salon a job is about, when its data names one (for search)."""
    candidates: list[Any] = [kwargs]
    if isinstance(kwargs, dict):
        candidates.extend(v for v in kwargs.values() if isinstance(v, dict))
    if isinstance(args, list | tuple):
        candidates.extend(a for a in args if isinstance(a, dict))
    for candidate in candidates:
        if isinstance(candidate, dict):
            for key in SALON_KEYS:
                value = candidate.get(key)
                if isinstance(value, str | int) and value != "":
                    return str(value)
    return ""


def _queue_of(task) -> str:
    info = task.request.delivery_info or {}
    return info.get("routing_key") or info.get("queue") or ""


def on_before_publish(
    sender=None, body=None, routing_key=None, headers=None, properties=None, **kw
):
    headers = headers or {}
    job_id = headers.get("id")
    if not job_id or not routing_key:
        return
    args, kwargs = (body[0], body[1]) if isinstance(body, list | tuple) else ((), {})
    if has_secrets(args) or has_secrets(kwargs):
        # What task events (Flower) show of the job: never a secret.
        headers["argsrepr"] = repr(redact_data(args))
        headers["kwargsrepr"] = repr(redact_data(kwargs))
    now = time.time()
    eta = headers.get("eta")
    fields = {
        "id": job_id,
        "queue": routing_key,
        "task": headers.get("task") or sender or "",
        "priority": seed_priority((properties or {}).get("priority")),
        "salon": salon_of(args, kwargs),
        "enqueued_at": _iso(now),
        "eta": eta or "",
        **dump_data(args, kwargs),
    }
    if headers.get(publish.DEFERRED_REASON_HEADER):
        fields["deferred"] = headers[publish.DEFERRED_REASON_HEADER]
    _safely(
        records.record_transition,
        job_id=job_id,
        queue=routing_key,
        state=records.DELAYED if eta else records.WAITING,
        fields=fields,
        now=now,
        writer=_writer if _worker_process else None,
    )


def on_prerun(sender=None, task_id=None, task=None, **kw):
    global _worker_process
    _worker_process = True
    _install_log_handler()
    now = time.time()
    _running.lines = []
    _running.started = now
    _safely(
        records.record_transition,
        job_id=task_id,
        queue=_queue_of(task),
        state=records.ACTIVE,
        fields={
            "started_at": _iso(now),
            "worker": task.request.hostname or "",
            "finished_at": "",
        },
        count_attempt=not publish.job_run_is_deferred_copy(task.request),
        now=now,
        writer=_writer,
    )


def _finish(task, job_id: str, state: str | None, fields: dict) -> None:
    now = time.time()
    started = getattr(_running, "started", None)
    lines = getattr(_running, "lines", None) or []
    _running.lines = None
    _safely(
        records.record_transition,
        job_id=job_id,
        queue=_queue_of(task),
        state=state,
        fields={"finished_at": _iso(now), **fields},
        duration=(now - started) if started else None,
        log_lines=lines,
        now=now,
        writer=_writer,
    )


def on_success(sender=None, **kw):
    _finish(sender, sender.request.id, records.COMPLETED, {})


def _error_text(exception) -> str:
    return redact_text(f"{type(exception).__name__}: {exception}")


def _traceback_text(einfo) -> str:
    return redact_text(str(einfo.traceback)) if einfo else ""


def on_failure(sender=None, task_id=None, exception=None, einfo=None, **kw):
    _finish(
        sender,
        task_id,
        records.FAILED,
        {
            "error": _error_text(exception),
            "traceback": _traceback_text(einfo),
        },
    )


def on_retry(sender=None, request=None, reason=None, einfo=None, **kw):
    exception = getattr(reason, "exc", None) or reason
    _finish(
        sender,
        request.id,
        None,  # the retry's publish already made the record waiting or delayed
        {
            "error": _error_text(exception),
            "traceback": _traceback_text(einfo),
            "finished_at": "",
        },
    )


def on_worker_process_shutdown(**kw):
    _writer.flush()


def connect() -> None:
    atexit.register(_writer.flush)
    signals.worker_process_shutdown.connect(on_worker_process_shutdown, weak=False)
    signals.worker_shutdown.connect(on_worker_process_shutdown, weak=False)
    signals.before_task_publish.connect(on_before_publish, weak=False)
    signals.task_prerun.connect(on_prerun, weak=False)
    signals.task_success.connect(on_success, weak=False)
    signals.task_failure.connect(on_failure, weak=False)
    signals.task_retry.connect(on_retry, weak=False)


def disconnect() -> None:
    signals.before_task_publish.disconnect(on_before_publish)
    signals.task_prerun.disconnect(on_prerun)
    signals.task_success.disconnect(on_success)
    signals.task_failure.disconnect(on_failure)
    signals.task_retry.disconnect(on_retry)
