"""The soak's scale-out topology (issue 14) and its fault plan.

A Redis primary, its replica and three sentinels; every product process
reaches them only through REDIS_SENTINELS / REDIS_SENTINEL_MASTER (cache and
broker in the one group, on DBs 0 and 1; REDIS_HOST/PORT point at port 1, so
nothing reaches another Redis). Two web processes (the Procfile's command, one
worker each, on two ports), two workers of each of the Procfile's worker
entries (their own command, under scripts/supervise.sh, named
``<entry>-<n>``), two beats on the LeaderScheduler.

Faults: SIGKILL one worker of each entry (its supervise.sh starts it again),
SIGKILL one web process (started again, as a supervisor would), SIGKILL the
Redis primary (Sentinel promotes the replica), SIGKILL the beat holding the
lease (started again after the lease expired: the standby must take over),
and later the old primary back as a replica of the new one.
"""

import os
import re
import shlex
import signal
import socket
import time
from pathlib import Path

from bench.harness import Product, free_port
from bench.soak_beats import beat_report, beat_sends
from queues.definitions import QUEUES
from tests.processes import (
    SentinelGroup,
    celery_beat_args,
    first_completion_after,
    sentinel_group,
)
from tests.utils import wait_until

MASTER = "soak"
CACHE_DB, QUEUE_DB = 0, 1
WEBS = BEATS = WORKERS_PER_ENTRY = 2
LEASE_SECONDS = 3  # BEAT_LEASE_SECONDS here
#: What a beat logs when it takes the lease (queues/beat_leader.py).
LEASE_TAKEN = "holds the lease: sending"


def descendants(pid: int) -> list[int]:
    """``pid``'s children, their children, and so on."""
    found = []
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return found
    for child in map(int, children):
        found += [child, *descendants(child)]
    return found


def group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class ScaleOutProduct(Product):
    """The Procfile's entries, each web, worker and beat started several times."""

    def __init__(self, env: dict[str, str], logdir, web_ports: list[int]):
        super().__init__(env, logdir)
        self.web_ports = web_ports

    def procfile(self) -> dict[str, str]:
        base = super().procfile()
        entries = {}
        for n, port in enumerate(self.web_ports):
            entries[f"web{n}"] = base["web"]
            self.entry_env[f"web{n}"] = {"WEB_PORT": str(port), "WEB_CONCURRENCY": "1"}
        for name, command in base.items():
            if name not in ("web", "beat"):
                for n in range(WORKERS_PER_ENTRY):
                    entries[f"{name}-{n}"] = f"{command} --name {name}-{n}"
        for n in range(BEATS):
            entries[f"beat{n}"] = shlex.join(celery_beat_args())
        return entries

    def workers(self) -> list[str]:
        return [n for n in self.procs if "-" in n]  # <entry>-<n>; web0, beat0

    def beats(self) -> list[str]:
        return [n for n in self.procs if re.fullmatch(r"beat\d+", n)]

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for name, proc in self.procs.items():
                if proc.poll() is not None:
                    raise RuntimeError(f"{name} exited:\n{self.log(name)[-3000:]}")
            if all(" ready." in self.log(n) for n in self.workers()) and all(
                port_open(port) for port in self.web_ports
            ):
                return
            time.sleep(0.2)
        raise RuntimeError("the product did not start in time")

    def kill_worker(self, name: str, timeout: float = 120) -> float:
        """SIGKILL the worker under ``name``'s supervise.sh (which stays);
        returns seconds until supervise.sh's new worker logged ready."""
        with self.lock:
            log = self.log(name)
            readies, restarts = log.count(" ready."), log.count("supervise: ")
            for pid in descendants(self.procs[name].pid):
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            killed = time.monotonic()
        while time.monotonic() - killed < timeout:
            log = self.log(name)
            if log.count("supervise: ") > restarts and log.count(" ready.") > readies:
                return time.monotonic() - killed
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not come back in time")

    def kill_web(self, name: str, timeout: float = 90) -> float:
        """SIGKILL a web process's group and start it again as a supervisor
        would; returns seconds until it accepts connections."""
        port = int(self.entry_env[name]["WEB_PORT"])
        with self.lock:
            proc = self.kill_group(name)
            killed = time.monotonic()
            # Its worker may hold the listening socket a moment longer.
            while group_alive(proc.pid) and time.monotonic() - killed < 10:
                time.sleep(0.05)
            self.start(only=name)
        while time.monotonic() - killed < timeout:
            if port_open(port):
                return time.monotonic() - killed
            time.sleep(0.1)
        raise RuntimeError(f"{name} did not come back in time")

    def worker_restarts(self) -> dict[str, int]:
        """Restarts by supervise.sh, per worker, from its log."""
        return {n: self.log(n).count("supervise: ") for n in self.workers()}


class ScaleOut:
    """The scale-out topology's processes and its fault plan."""

    def __init__(self, args, workdir):
        self.args, self.workdir = args, workdir
        self.web_ports = [free_port() for _ in range(WEBS)]
        self.group: SentinelGroup | None = None
        self.product: ScaleOutProduct | None = None
        self.killed_workers: list[str] = []
        self.failover: dict[str, float] = {}
        #: The beat killed while it held the lease, and the other's lease count then.
        self.beat_kill: dict[str, object] = {}

    def start_redis(self) -> dict[str, str]:
        self.group = sentinel_group(
            master=MASTER, log_dir=self.workdir, extra=["--appendonly", "yes"]
        )
        return {
            "REDIS_SENTINELS": self.group.sentinels_setting(),
            "REDIS_SENTINEL_MASTER": MASTER,
            # Nothing may reach a Redis outside the group.
            "REDIS_HOST": "127.0.0.1",
            "REDIS_PORT": "1",
            "REDIS_DB": str(CACHE_DB),
            "REDIS_QUEUE_HOST": "127.0.0.1",
            "REDIS_QUEUE_PORT": "1",
            "REDIS_QUEUE_DB": str(QUEUE_DB),
            "BEAT_LEASE_SECONDS": str(LEASE_SECONDS),
            "WHATSAPP_OUTBOUND_REDRIVE_AFTER_SECONDS": "15",
            "REMINDER_REQUEUE_AFTER_SECONDS": "15",
        }

    def start(self, env: dict[str, str]) -> None:
        self.product = ScaleOutProduct(env, self.workdir, self.web_ports)
        self.product.start()
        self.product.wait_ready(timeout=180)

    def console_sends(self, marker: str) -> int:
        return sum(
            self.product.log(n).count(marker)
            for n in self.product.workers()
            if n.startswith("reminder-")
        )

    def faults(self, timeline) -> None:
        """Runs in a thread during the load, on a schedule scaled to the duration."""
        d = self.args.duration
        entries = sorted({n.rsplit("-", 1)[0] for n in self.product.workers()})
        plan = [
            (0.08 + 0.06 * i, "worker", f"{entry}-{i % WORKERS_PER_ENTRY}")
            for i, entry in enumerate(entries)
        ]
        plan += [
            (0.42, "web", "web0"),
            (0.55, "primary", None),
            (0.68, "beat", None),
            (0.8, "rejoin", None),
        ]
        for fraction, kind, name in plan:
            at = timeline.start + fraction * d
            while time.monotonic() < at:
                time.sleep(0.05)
            if kind == "worker":
                timeline.note(f"SIGKILL worker {name}")
                took = self.product.kill_worker(name)
                self.killed_workers.append(name)
                timeline.note(
                    f"{name} restarted by supervise.sh, ready after {took:.1f}s"
                )
            elif kind == "web":
                begin = time.monotonic() - timeline.start
                timeline.note(f"SIGKILL {name} (port {self.web_ports[0]})")
                took = self.product.kill_web(name)
                # Requests in flight on it when it died get no answer.
                timeline.fault_windows.append(
                    (round(begin - 5.0, 1), round(begin + 1.0, 1), "no answer")
                )
                timeline.note(f"{name} restarted, accepting after {took:.1f}s")
            elif kind == "primary":
                self.kill_primary(timeline)
            elif kind == "beat":
                self.kill_leading_beat(timeline)
            elif kind == "rejoin":
                self.rejoin(timeline)

    def kill_primary(self, timeline) -> None:
        group = self.group
        begin, killed_at = time.monotonic(), time.time()
        timeline.note(f"SIGKILL the Redis primary (port {group.primary.port})")
        group.primary.kill(signal.SIGKILL)
        wait_until(group.replica_promoted, timeout=60, message="replica promoted")
        promoted_at = time.time()
        timeline.note(
            f"Sentinel promoted the replica after {promoted_at - killed_at:.1f}s"
        )
        new_primary = group.replica.client(db=QUEUE_DB)
        queues = [spec.name for spec in QUEUES]
        first_job_at = wait_until(
            lambda: first_completion_after(new_primary, killed_at, queues),
            timeout=120,
            message="a job completed on the new primary",
        )
        took = first_job_at - killed_at
        timeline.note(f"first job completed on the new primary after {took:.1f}s")
        end = time.monotonic() + self.args.broker_grace
        window = (begin - timeline.start, end - timeline.start)
        timeline.fault_windows.append((*(round(t, 1) for t in window), "any"))
        self.failover = {
            "kill_to_promoted_s": round(promoted_at - killed_at, 1),
            "kill_to_first_job_on_new_primary_s": round(first_job_at - killed_at, 1),
            "window_s": round(end - begin, 1),
        }

    def kill_leading_beat(self, timeline) -> None:
        """SIGKILL the beat that sent last (the lease holder); start it again
        only once its lease has expired, so the standby has to take over."""
        product = self.product

        def last_send(name: str) -> float:
            sends, _ = beat_sends(product.log(name))
            return max((at for at, _ in sends), default=0.0)

        leader = max(product.beats(), key=last_send)
        standby = next(n for n in product.beats() if n != leader)
        leases = product.log(standby).count(LEASE_TAKEN)
        timeline.note(f"SIGKILL {leader} (the beat holding the lease)")
        # Under the product's lock throughout, so its supervisor does not
        # count this exit as unexpected nor start the beat again early.
        with product.lock:
            product.kill_group(leader)
            time.sleep(2 * LEASE_SECONDS)  # a restart delay past the lease
            product.start(only=leader)
        timeline.note(f"{leader} started again, {2 * LEASE_SECONDS}s after the kill")
        self.beat_kill = {"killed": leader, "standby": standby, "leases": leases}

    def standby_took_over(self) -> bool:
        """The standby took the lease after the leader was killed."""
        if not self.beat_kill:
            return False
        log = self.product.log(self.beat_kill["standby"])
        return log.count(LEASE_TAKEN) > self.beat_kill["leases"]

    def rejoin(self, timeline) -> None:
        """The old primary back, as a replica of the new one."""
        old, new = self.group.primary, self.group.replica
        old.stop()
        old.args = [*old.args, "--replicaof", "127.0.0.1", str(new.port)]
        old.start().wait_ready(timeout=30)
        wait_until(
            lambda: old.client().info("replication").get("master_link_status") == "up",
            timeout=60,
            message="old primary in sync as a replica",
        )
        timeline.note(f"old primary back as a replica of port {new.port}, in sync")

    def finish(self, summary: dict, db_url: str, timeline) -> list[str]:
        """Adds the scale-out part to ``summary``; returns its report lines."""
        restarts = self.product.worker_restarts()
        unexpected = {
            n: count - self.killed_workers.count(n)
            for n, count in restarts.items()
            if count != self.killed_workers.count(n)
        }
        beats, beat_invariants, beat_lines = beat_report(
            {n: self.product.log(n) for n in self.product.beats()},
            db_url,
            timeline,
            self.args.duration,
        )
        invariants = {
            "failover: replica promoted, a job completed on it": bool(self.failover),
            "workers: each killed one restarted by supervise.sh": all(
                restarts[n] >= 1 for n in self.killed_workers
            )
            and len(self.killed_workers) == len(restarts) // WORKERS_PER_ENTRY,
            "beats: the standby took the lease when the leader was killed": (
                self.standby_took_over()
            ),
            **beat_invariants,
        }
        summary["scale_out"] = {
            "web_ports": self.web_ports,
            "failover": self.failover,
            "workers_killed": self.killed_workers,
            "worker_restarts": restarts,
            "worker_restarts_unexpected": unexpected,
            "beats": beats,
            "beat_killed": self.beat_kill,
        }
        summary["invariants"].update(invariants)
        summary["ok"] = all(summary["invariants"].values())
        f = self.failover
        return [
            "",
            f"failover: kill -> replica promoted {f.get('kill_to_promoted_s')}s, "
            f"kill -> first job completed on the new primary "
            f"{f.get('kill_to_first_job_on_new_primary_s')}s "
            f"(5xx/no-answer window {f.get('window_s')}s)",
            f"worker restarts by supervise.sh: {restarts} "
            f"(killed: {self.killed_workers}; unexpected: {unexpected or 'none'})",
            *beat_lines,
        ]

    def stop(self) -> None:
        if self.product is not None:
            self.product.stop()
        if self.group is not None:
            self.group.stop()
