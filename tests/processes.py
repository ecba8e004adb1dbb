"""Real processes for tests: Celery workers and throwaway redis-servers.

Each is started with its output in a log file and stopped (and reaped) by the
fixture that started it.
"""

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import redis

from queues import records
from queues.keys import state_key
from queues.workers import worker_argv
from tests.utils import wait_until

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ManagedProcess:
    name: str
    args: list[str]
    env: dict[str, str]
    log_path: Path
    proc: subprocess.Popen | None = None

    def start(self) -> "ManagedProcess":
        self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(
            self.args,
            env=self.env,
            cwd=ROOT,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Signal the whole process group (a prefork worker's children too)."""
        if self.alive:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def stop(self, timeout: float = 15.0) -> None:
        if self.proc is None:
            return
        if self.alive:
            self.kill(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill(signal.SIGKILL)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pass
        # Children of a killed prefork parent may linger in the group.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        self._log.close()


@dataclass
class CeleryWorker(ManagedProcess):
    queues: list[str] = field(default_factory=list)

    def wait_ready(self, timeout: float = 60.0) -> "CeleryWorker":
        def ready() -> bool:
            if not self.alive:
                raise AssertionError(
                    f"worker {self.name} exited:\n{self.log()[-4000:]}"
                )
            return " ready." in self.log()

        wait_until(ready, timeout=timeout, message=f"worker {self.name} ready")
        return self


def celery_worker_args(
    queues: list[str], *, name: str, concurrency: int = 1, pool: str = "prefork"
) -> list[str]:
    """The worker command line the product runs (queues/workers.py)."""
    return worker_argv(queues, name=name, concurrency=concurrency, pool=pool)


def celery_beat_args() -> list[str]:
    """Beat on the database scheduler; no schedule or pid file on disk."""
    return [
        sys.executable,
        "-m",
        "celery",
        "-A",
        "saas",
        "beat",
        "-S",
        "queues.beat_leader:LeaderScheduler",
        "-l",
        "INFO",
        "--pidfile=",
    ]


@dataclass
class RedisServer(ManagedProcess):
    port: int = 0

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(
            port=self.port, db=db, socket_timeout=2, socket_connect_timeout=1
        )

    def wait_ready(self, timeout: float = 10.0) -> "RedisServer":
        def pings() -> bool:
            try:
                return self.client().ping()
            except redis.RedisError:
                return False

        wait_until(pings, timeout=timeout, message=f"redis-server on {self.port}")
        return self


def redis_server(
    *, port: int | None = None, extra: list[str] | None = None, log_dir: Path
) -> RedisServer:
    port = port or free_port()
    workdir = tempfile.mkdtemp(prefix=f"redis-{port}-", dir=log_dir)
    args = [
        shutil.which("redis-server") or "redis-server",
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        workdir,
        *(extra or []),
    ]
    server = RedisServer(
        name=f"redis-{port}",
        args=args,
        env=dict(os.environ),
        log_path=Path(workdir) / "redis.log",
        port=port,
    )
    return server.start().wait_ready()


@dataclass
class SentinelServer(RedisServer):
    """A redis-sentinel (``redis-server <conf> --sentinel``) on its own port."""

    def master_address(self, name: str) -> tuple[str, int] | None:
        try:
            address = self.client().execute_command(
                "SENTINEL", "GET-MASTER-ADDR-BY-NAME", name
            )
        except redis.RedisError:
            return None
        return (address[0].decode(), int(address[1])) if address else None


def sentinel_server(
    *,
    masters: dict[str, int],
    log_dir: Path,
    down_after_ms: int = 1000,
    failover_timeout_ms: int = 5000,
) -> SentinelServer:
    """A sentinel watching each ``{name: port}`` master on 127.0.0.1, quorum 2."""
    port = free_port()
    workdir = tempfile.mkdtemp(prefix=f"sentinel-{port}-", dir=log_dir)
    lines = [f"port {port}", "bind 127.0.0.1", f"dir {workdir}"]
    for name, master_port in masters.items():
        lines += [
            f"sentinel monitor {name} 127.0.0.1 {master_port} 2",
            f"sentinel down-after-milliseconds {name} {down_after_ms}",
            f"sentinel failover-timeout {name} {failover_timeout_ms}",
            f"sentinel parallel-syncs {name} 1",
        ]
    config = Path(workdir) / "sentinel.conf"  # sentinel rewrites it: its own copy
    config.write_text("\n".join(lines) + "\n")
    server = SentinelServer(
        name=f"sentinel-{port}",
        args=[
            shutil.which("redis-server") or "redis-server",
            str(config),
            "--sentinel",
        ],
        env=dict(os.environ),
        log_path=Path(workdir) / "sentinel.log",
        port=port,
    )
    return server.start().wait_ready()


class SentinelGroup(NamedTuple):
    """A primary, its replica and three sentinels watching them as ``master``."""

    primary: RedisServer
    replica: RedisServer
    sentinels: list[SentinelServer]
    master: str

    def sentinels_setting(self) -> str:
        """The REDIS_SENTINELS value that reaches this group."""
        return ",".join(f"127.0.0.1:{sentinel.port}" for sentinel in self.sentinels)

    def replica_promoted(self) -> bool:
        address = self.sentinels[0].master_address(self.master)
        return address == ("127.0.0.1", self.replica.port)

    def stop(self) -> None:
        for server in (*self.sentinels, self.replica, self.primary):
            server.stop()


def sentinel_group(
    *, master: str, log_dir: Path, extra: list[str] | None = None
) -> SentinelGroup:
    """Primary and replica in sync, then three sentinels (quorum 2)."""
    primary = redis_server(log_dir=log_dir, extra=extra)
    servers: list[RedisServer] = [primary]
    try:
        replica = redis_server(
            log_dir=log_dir,
            extra=[*(extra or []), "--replicaof", "127.0.0.1", str(primary.port)],
        )
        servers.append(replica)
        wait_until(
            lambda: replica.client().info("replication")["master_link_status"] == "up",
            timeout=20,
            message="replica in sync",
        )
        sentinels = []
        for _ in range(3):
            sentinels.append(
                sentinel_server(masters={master: primary.port}, log_dir=log_dir)
            )
            servers.append(sentinels[-1])
    except BaseException:
        for server in reversed(servers):
            server.stop()
        raise
    return SentinelGroup(primary, replica, sentinels, master)


def first_completion_after(
    client: redis.Redis, since: float, queues: Iterable[str]
) -> float | None:
    """Epoch time of the first job of ``queues`` that completed after ``since``
    (the job records on the broker's DB ``client`` reads)."""
    times = []
    for queue in queues:
        first = client.zrangebyscore(
            state_key(queue, records.COMPLETED), since, "+inf", 0, 1, True
        )
        times += [score for _, score in first]
    return min(times) if times else None
