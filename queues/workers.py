"""The Celery worker command line of a queue, built from its QueueSpec: the one
place the Procfile, the compose files (through ``manage.py queue_worker``),
the tests and the benches take it from."""

import os
import sys
from collections.abc import Sequence

from queues.definitions import queue_spec

#: Pool when neither the caller nor CELERY_POOL names one: jobs wait on I/O.
DEFAULT_POOL = "threads"


def worker_argv(
    queues: Sequence[str],
    *,
    name: str | None = None,
    concurrency: int | None = None,
    pool: str | None = None,
    loglevel: str = "INFO",
    app: str = "saas",
) -> list[str]:
    """``python -m celery worker`` for ``queues`` (full names or aliases):
    named after their aliases, at the first queue's concurrency setting, on
    the CELERY_POOL pool, unless told otherwise."""
    specs = [queue_spec(queue) for queue in queues]
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        app,
        "worker",
        "-Q",
        ",".join(spec.name for spec in specs),
        "-n",
        f"{name or '-'.join(spec.alias for spec in specs)}@%h",
        "-c",
        str(concurrency or specs[0].concurrency),
        "-P",
        pool or os.environ.get("CELERY_POOL") or DEFAULT_POOL,
        "--without-gossip",
        "--without-mingle",
        "-l",
        loglevel,
    ]
