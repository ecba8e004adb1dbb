"""The worker side of job records (queues/records.py): a background thread
that writes transitions in batches, so a job never waits for Redis."""

from __future__ import annotations

import logging
import os
import threading
import time
import weakref
from typing import Any

import redis

from queues.records import (
    ACTIVE,
    COMPLETED,
    FAILED,
    TRANSITIONS_LUA,
    write_transitions,
)
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

_writers: weakref.WeakSet[BatchingWriter] = weakref.WeakSet()


def records_discard(job_id: str) -> None:
    """A job whose publish failed: drop what this process's writers still
    hold of its record (queues.publish), so a record written late, once the
    broker is back, does not show a job that never was (the lost-job sweep
    would publish it)."""
    for writer in list(_writers):
        writer.discard(job_id)


class BatchingWriter:
    """Worker side: a job hands its transitions to a background thread, which
    writes them in pipelines BATCH_DELAY later.

    The job never waits for Redis, and one round trip carries the transitions
    of many jobs. A job that starts and ends within one batch is written once
    (its start folded into its end), so under load a record costs one script
    call; a job that runs longer shows as active in the meantime. One thread
    per process keeps a job's transitions in order. flush() waits for what
    was handed over (worker shutdown). A batch Redis cannot take (down,
    failing over, restarted without the script) is tried again for up to
    RETRY_SECONDS, so a broker blip does not leave records behind their jobs
    (a record left "waiting" is what the lost-job sweep looks for); then it
    is logged and dropped: a record is never worth failing a job.
    """

    BATCH_DELAY = 0.05
    BATCH_MAX = 1000
    RETRY_SECONDS = 30.0
    RETRY_DELAY_MAX = 2.0

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._pending: list[dict[str, Any]] = []
        self._in_flight = 0
        self._idle = False
        self._thread: threading.Thread | None = None
        self._pid = os.getpid()
        self._sha: str | None = None
        self._discarded: set[str] = set()  # jobs to drop from the batch in flight
        _writers.add(self)

    def send(self, transition: dict[str, Any]) -> None:
        with self._cond:
            if self._thread is None or self._pid != os.getpid():
                self._start()
            self._pending.append(transition)
            if self._idle:
                self._cond.notify_all()

    def discard(self, job_id: str) -> None:
        """Drop the job's transitions not written yet."""
        with self._cond:
            self._pending = [t for t in self._pending if t["job_id"] != job_id]
            if self._in_flight:
                self._discarded.add(job_id)

    def _start(self) -> None:
        # After a fork the parent's thread and buffer are not ours.
        self._pid, self._pending, self._in_flight = os.getpid(), [], 0
        self._thread = threading.Thread(
            target=self._run, name="job-records", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._pending:
                    self._idle = True
                    self._cond.wait()
                self._idle = False
            time.sleep(self.BATCH_DELAY)
            with self._cond:
                batch = self._pending[: self.BATCH_MAX]
                del self._pending[: self.BATCH_MAX]
                self._in_flight = len(batch)
            try:
                self._write_retrying(fold_starts(batch))
            except Exception as exc:  # keep the writer alive whatever happens
                logger.warning("%d job records not written: %s", len(batch), exc)
            finally:
                with self._cond:
                    self._in_flight = 0
                    self._discarded.clear()
                    self._cond.notify_all()

    def _write_retrying(self, batch: list[dict[str, Any]]) -> None:
        deadline = time.monotonic() + self.RETRY_SECONDS
        delay = 0.1
        while True:
            with self._cond:
                batch = [t for t in batch if t["job_id"] not in self._discarded]
            if not batch:
                return None
            try:
                return self._write(batch)
            except redis.RedisError:
                if time.monotonic() + delay > deadline:
                    raise
                time.sleep(delay)
                delay = min(delay * 2, self.RETRY_DELAY_MAX)

    def _write(self, batch: list[dict[str, Any]]) -> None:
        if self._sha is None:
            self._sha = queue_redis().script_load(TRANSITIONS_LUA)
        try:
            write_transitions(batch, sha=self._sha)
        except redis.exceptions.NoScriptError:
            self._sha = None  # Redis restarted: load the script again
            raise

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every transition handed over is written."""
        deadline = time.monotonic() + timeout
        with self._cond:
            if self._thread is None or self._pid != os.getpid():
                return True
            self._cond.notify_all()
            while self._pending or self._in_flight:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True


def fold_starts(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold a job's start (state active) into its end when both are in the
    batch: one write instead of two, same record."""
    last_index: dict[str, int] = {}
    for i, transition in enumerate(batch):
        last_index[transition["job_id"]] = i
    folded: list[dict[str, Any]] = []
    carried: dict[str, dict[str, Any]] = {}
    for i, transition in enumerate(batch):
        job_id = transition["job_id"]
        if job_id in carried:
            start = carried.pop(job_id)
            transition = {
                **transition,
                "fields": {**(start["fields"] or {}), **(transition["fields"] or {})},
                "count_attempt": start["count_attempt"] or transition["count_attempt"],
            }
        later_end = last_index[job_id] > i and batch[last_index[job_id]]["state"] in (
            COMPLETED,
            FAILED,
            None,
        )
        if transition["state"] == ACTIVE and later_end:
            carried[job_id] = transition
            continue
        folded.append(transition)
    return folded
