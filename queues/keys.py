"""Every key this project keeps on the broker's Redis (``REDIS_QUEUE_DB``).

The broker's own lists are kombu's; the rest are ours. Named here once, so
``redis-cli --scan`` on the queue DB can be read against this page.

- ``{queue}`` and ``{queue}\\x06\\x16{n}``: kombu's lists of a queue's waiting
  messages, priority level 0 (most urgent) in the first
- ``jobs:j:{id}``            hash: a job's record (queues/records.py)
- ``jobs:log:{id}``          list: log lines the job wrote
- ``jobs:q:{queue}:{state}`` sorted set of job ids by the time they entered it
- ``jobs:m:{queue}:{outcome}:{minute}`` completed/failed per minute, kept 2 h
- ``jobs:dur:{queue}``       hash: job duration histogram (bucket -> count)
- ``queues:paused``          set: the paused queues (pause outlives restarts)
- ``queues:workers:{queue}`` sorted set: worker heartbeats
- ``queues:last-take:{queue}`` hash: worker -> when it last took a job of it
- ``queues:backlog:{queue}`` since when a queue's backlog is over the threshold
- ``queues:test-jobs``       list: the operators' test jobs' data, newest first
- ``whatsapp:webhook:drain`` set while a webhook drain job is queued or running
- ``whatsapp:webhook:claims`` hash: webhook event id -> drains that claimed it
  and did not finish (poison-body quarantine, messaging/inbox_claims.py)
- ``queues:beat:leader``     the beat that holds the lease (the others stand by)
- ``queues:beat:sent:{name}`` set when a periodic task was sent, for most of its period
- ``queues:lost:suspects``   hash: job id -> when a sweep first found it in no
  list and not unacked (queues/lost_jobs.py)
- ``unacked``                kombu's hash of the messages workers hold (read only)
- ``queues:broker:seen:{watcher}`` hash: the broker's Redis run_id a watcher
  last saw, and when (queues/broker_identity.py)
"""

#: kombu's Redis transport keeps priority level n of queue q in "q\x06\x16n".
PRIORITY_SEP = "\x06\x16"

#: Prefix of the job records (passed to the records' Lua script as is).
JOB_PREFIX = "jobs"

PAUSED_KEY = "queues:paused"
TEST_JOB_LOG_KEY = "queues:test-jobs"
DRAIN_FLAG_KEY = "whatsapp:webhook:drain"
WEBHOOK_CLAIMS_KEY = "whatsapp:webhook:claims"
BEAT_LEADER_KEY = "queues:beat:leader"
LOST_SUSPECTS_KEY = "queues:lost:suspects"
#: kombu's Redis transport: delivered, unacknowledged messages (its default
#: ``unacked_key``; celeryconfig does not change it).
UNACKED_KEY = "unacked"


def beat_sent_key(entry_name: str) -> str:
    return f"queues:beat:sent:{entry_name}"


def broker_lists(queue: str) -> list[str]:
    """The broker's lists holding a queue's waiting messages, level 0 first."""
    return [queue] + [f"{queue}{PRIORITY_SEP}{level}" for level in range(1, 10)]


def broker_seen_key(watcher: str) -> str:
    return f"queues:broker:seen:{watcher}"


def job_key(job_id: str) -> str:
    return f"{JOB_PREFIX}:j:{job_id}"


def log_key(job_id: str) -> str:
    return f"{JOB_PREFIX}:log:{job_id}"


def state_key(queue: str, state: str) -> str:
    return f"{JOB_PREFIX}:q:{queue}:{state}"


def minute_key(queue: str, outcome: str, minute: int) -> str:
    return f"{JOB_PREFIX}:m:{queue}:{outcome}:{minute}"


def duration_key(queue: str) -> str:
    return f"{JOB_PREFIX}:dur:{queue}"


def workers_key(queue: str) -> str:
    return f"queues:workers:{queue}"


def last_take_key(queue: str) -> str:
    return f"queues:last-take:{queue}"


def backlog_key(queue: str) -> str:
    return f"queues:backlog:{queue}"
