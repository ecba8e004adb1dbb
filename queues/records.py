"""Job records: one Redis hash per job on the queue DB, indexed per queue and state.

Why Redis and not PostgreSQL: a record is written three times per job (published,
started, finished) from every worker process; one EVALSHA on the broker's Redis
costs a fraction of a no-op task, while a PostgreSQL transaction per transition
would cost more than the task itself (see docs/PERFORMANCE.md).

Layout: all on REDIS_QUEUE_DB, next to the broker's own lists, under the keys
of queues/keys.py; a state's sorted set gives its count in O(1).

Retention (DESIGN.md) is enforced by the same script that records a finished
job: completed 24 h / 1,000 per queue, failed 7 days / 5,000 per queue.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterable
from functools import cache
from typing import Any, Protocol

from django.conf import settings

from queues.keys import (
    JOB_PREFIX,
    job_key,
    log_key,
    state_key,
)
from saas.redis import queue_redis

logger = logging.getLogger(__name__)

WAITING = "waiting"
DELAYED = "delayed"
ACTIVE = "active"
COMPLETED = "completed"
FAILED = "failed"
STATES = (WAITING, DELAYED, ACTIVE, COMPLETED, FAILED)
FINISHED_STATES = (COMPLETED, FAILED)

RECORD_FIELDS = (
    "id",
    "queue",
    "task",
    "priority",
    "args",
    "kwargs",
    "salon",
    "state",
    "attempts",
    "progress",
    "error",
    "traceback",
    "worker",
    "enqueued_at",
    "eta",
    "started_at",
    "finished_at",
    "truncated",
    "redacted",
    "original_kwargs",
    "edited_by",
    "edited_at",
)

LOG_LINES_MAX = 200
DATA_MAX_CHARS = 256 * 1024
MINUTE_KEY_TTL = 2 * 3600
#: Upper bounds (seconds) of the job duration histogram.
DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)


def retention(state: str) -> tuple[int, int]:
    """(seconds, max records per queue) kept for a finished state."""
    if state == COMPLETED:
        return settings.QUEUE_COMPLETED_RETENTION_SECONDS, (
            settings.QUEUE_COMPLETED_RETENTION_COUNT
        )
    if state == FAILED:
        return settings.QUEUE_FAILED_RETENTION_SECONDS, (
            settings.QUEUE_FAILED_RETENTION_COUNT
        )
    return 0, 0


def duration_bucket(seconds: float) -> str:
    for bound in DURATION_BUCKETS:
        if seconds <= bound:
            return repr(float(bound))
    return "+Inf"


# One call writes a batch of transitions. ARGV[1] is a JSON array of
# {id, q (queue), s (state index 1..5; 0 keeps the state), now, ttl (0 = keep),
#  max (kept per queue), att (1 counts an attempt), db (duration bucket or ''),
#  d (duration), logs [lines], f {field: value}}; ARGV[2] is the key prefix.
# Keys are built here from the prefix (the queue DB is one Redis, never a
# cluster), so a batch costs one round trip and one command.
TRANSITIONS_LUA = """
local batch = cjson.decode(ARGV[1])
local prefix = ARGV[2]
local states = {'waiting', 'delayed', 'active', 'completed', 'failed'}
for _, t in ipairs(batch) do
  local id = t.id
  local jk = prefix .. ':j:' .. id
  local lk = prefix .. ':log:' .. id
  local qk = prefix .. ':q:' .. t.q .. ':'
  local now = tonumber(t.now)
  if t.s == 1 or t.s == 2 then
    -- A publish (waiting, delayed) written after the job had already started
    -- or ended elsewhere (the publisher's writer is batched, a worker may be
    -- quicker): the record keeps the later state, and takes the fields.
    local current = redis.call('HGET', jk, 'state')
    if current == 'active' or current == 'completed' or current == 'failed' then
      local since = tonumber(redis.call('ZSCORE', qk .. current, id) or 0)
      if since >= now then
        t.s = 0
        t.f.state = nil
      end
    end
  end
  local flat = {}
  for k, v in pairs(t.f) do
    flat[#flat + 1] = k
    flat[#flat + 1] = v
  end
  if #flat > 0 then redis.call('HSET', jk, unpack(flat)) end
  if t.att == 1 then redis.call('HINCRBY', jk, 'attempts', 1) end
  if #t.logs > 0 then
    redis.call('RPUSH', lk, unpack(t.logs))
    redis.call('LTRIM', lk, -__LOG_MAX__, -1)
  end
  if t.s > 0 then
    for i = 1, 5 do
      if i == t.s then
        redis.call('ZADD', qk .. states[i], now, id)
      else
        redis.call('ZREM', qk .. states[i], id)
      end
    end
    if t.ttl > 0 then
      local set = qk .. states[t.s]
      local minute = prefix .. ':m:' .. t.q .. ':' .. states[t.s] .. ':'
        .. string.format('%d', math.floor(now / 60))
      redis.call('EXPIRE', jk, t.ttl)
      redis.call('EXPIRE', lk, t.ttl)
      redis.call('INCR', minute)
      redis.call('EXPIRE', minute, __MINUTE_TTL__)
      local old = redis.call('ZRANGEBYSCORE', set, '-inf', now - t.ttl, 'LIMIT', 0, 500)
      local excess = redis.call('ZCARD', set) - t.max
      if excess > 0 then
        for _, j in ipairs(redis.call('ZRANGE', set, 0, excess - 1)) do
          old[#old + 1] = j
        end
      end
      for _, j in ipairs(old) do
        redis.call('DEL', prefix .. ':j:' .. j, prefix .. ':log:' .. j)
        redis.call('ZREM', set, j)
      end
    else
      redis.call('PERSIST', jk)
      redis.call('PERSIST', lk)
    end
  end
  if t.db ~= '' then
    local dk = prefix .. ':dur:' .. t.q
    redis.call('HINCRBY', dk, t.db, 1)
    redis.call('HINCRBY', dk, 'count', 1)
    redis.call('HINCRBYFLOAT', dk, 'sum', t.d)
  end
end
return #batch
""".replace("__LOG_MAX__", str(LOG_LINES_MAX)).replace(
    "__MINUTE_TTL__", str(MINUTE_KEY_TTL)
)


@cache
def _script():
    return queue_redis().register_script(TRANSITIONS_LUA)


def _payload(
    *,
    job_id: str,
    queue: str,
    state: str | None,
    fields: dict[str, Any] | None,
    count_attempt: bool,
    duration: float | None,
    log_lines: list[str],
    now: float,
) -> dict[str, Any]:
    ttl, max_kept = retention(state) if state else (0, 0)
    values = {k: "" if v is None else str(v) for k, v in (fields or {}).items()}
    if state:
        values["state"] = state
    return {
        "id": job_id,
        "q": queue,
        "s": STATES.index(state) + 1 if state else 0,
        "now": repr(now),
        "ttl": ttl,
        "max": max_kept,
        "att": 1 if count_attempt else 0,
        "db": duration_bucket(duration) if duration is not None else "",
        "d": repr(duration or 0.0),
        "logs": log_lines,
        "f": values,
    }


class TransitionSink(Protocol):
    """Takes record_transition's transitions to write later (a batching writer)."""

    def send(self, transition: dict[str, Any]) -> None: ...


def write_transitions(transitions: list[dict[str, Any]], *, sha: str | None = None):
    """Write transitions (record_transition's keyword arguments) in one call."""
    body = json.dumps([_payload(**t) for t in transitions], default=str)
    client = queue_redis()
    if sha is not None:
        return client.evalsha(sha, 0, body, JOB_PREFIX)
    return _script()(keys=[], args=[body, JOB_PREFIX], client=client)


def record_transition(
    *,
    job_id: str,
    queue: str,
    state: str | None,
    fields: dict[str, Any] | None = None,
    count_attempt: bool = False,
    duration: float | None = None,
    log_lines: Iterable[str] = (),
    now: float | None = None,
    writer: TransitionSink | None = None,
) -> None:
    """Move a job's record into ``state`` (creating it if new), in one round trip.

    With ``state=None`` the record keeps its state and only gains fields, log
    lines and a duration sample. With a ``writer`` the write happens in the
    background, batched with others (queues/record_writer.py).
    """
    transition = {
        "job_id": job_id,
        "queue": queue,
        "state": state,
        "fields": fields,
        "count_attempt": count_attempt,
        "duration": duration,
        "log_lines": list(log_lines),
        "now": time.time() if now is None else now,
    }
    if writer is not None:
        writer.send(transition)
    else:
        write_transitions([transition])


def record_progress(job_id: str, progress: Any) -> None:
    """Let a running job report its progress (a percentage or a short text)."""
    client = queue_redis()
    if client.exists(job_key(job_id)):
        client.hset(job_key(job_id), "progress", str(progress))


def record_delete(job_id: str, queue: str, *, client=None) -> None:
    client = client or queue_redis()
    pipe = client.pipeline(transaction=False)
    pipe.delete(job_key(job_id), log_key(job_id))
    for state in STATES:
        pipe.zrem(state_key(queue, state), job_id)
    pipe.execute()
