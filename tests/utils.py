"""Helpers for tests: waiting on conditions with a deadline, never fixed sleeps."""

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    *,
    timeout: float = 20.0,
    interval: float = 0.05,
    message: str = "",
) -> T:
    """Poll ``predicate`` until it returns something truthy; fail at the deadline."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(
        f"condition not met within {timeout:.1f}s: {message or predicate} "
        f"(last: {last!r})"
    )


def queued_jobs(queue_name: str, task: str | None = None) -> list[dict]:
    """Jobs waiting in a queue's broker lists (every priority level), decoded;
    only ``task``'s when given. Each has its kwargs under "kwargs"."""
    import base64
    import json

    from saas.redis import queue_redis

    jobs = []
    for key in queue_redis().keys(f"{queue_name}*"):
        if queue_redis().type(key) != "list":
            continue
        for raw in queue_redis().lrange(key, 0, -1):
            message = json.loads(raw)
            if task and message["headers"]["task"] != task:
                continue
            body = json.loads(base64.b64decode(message["body"]))
            jobs.append(
                {
                    "task": message["headers"]["task"],
                    "priority": message["properties"].get("priority"),
                    "key": key,
                    "kwargs": body[1],
                }
            )
    return jobs


def run_with_broker_away(script: str, *args: str, env: dict[str, str]):
    """Run a Django ``script`` (python -c) whose broker is a port nobody listens
    on, as in a broker outage; returns the CompletedProcess (text output)."""
    import subprocess
    import sys

    from tests.processes import free_port

    return subprocess.run(
        [sys.executable, "-c", script, *args],
        env={**env, "REDIS_QUEUE_PORT": str(free_port())},
        capture_output=True,
        text=True,
        timeout=120,
    )


@contextmanager
def broker_at(port: int, db: int = 1) -> Iterator[None]:
    """The product's broker Redis client (queue_redis) pointed at a throwaway
    redis-server on ``port`` while the block runs, and back afterwards."""
    from django.test import override_settings

    from saas.redis import queue_redis

    queue_redis.cache_clear()
    try:
        with override_settings(REDIS_QUEUE_URL=f"redis://127.0.0.1:{port}/{db}"):
            yield
    finally:
        queue_redis.cache_clear()
