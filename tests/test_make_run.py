"""`make run` from a fresh copy of the project brings every process up.

The copy holds the tracked files only (as a clone would), shares this
checkout's virtualenv to save the install, runs on SQLite (the embedded
default) and finds no Redis on its port, so it starts its own under var/.
"""

import hashlib
import hmac
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.processes import ROOT, free_port
from tests.utils import wait_until

pytestmark = pytest.mark.slow


def fresh_copy(dest: Path) -> Path:
    files = (
        subprocess.run(
            ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
            cwd=ROOT,
            capture_output=True,
            check=True,
        )
        .stdout.decode()
        .split("\0")
    )
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)
    (dest / ".venv").symlink_to(ROOT / ".venv")
    return dest


def test_make_run_serves_the_product(tmp_path):
    project = fresh_copy(tmp_path / "clone")
    web_port, flower_port, redis_port = free_port(), free_port(), free_port()
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(
            ("DATABASE_URL", "REDIS_", "DJANGO_", "SECRET_KEY", "DEBUG")
        )
        and key
        not in ("JWT_SIGNING_KEY", "WHATSAPP_APP_SECRET", "WHATSAPP_VERIFY_TOKEN")
    }
    env.update(
        WEB_PORT=str(web_port),
        FLOWER_PORT=str(flower_port),
        REDIS_PORT=str(redis_port),
        LOG_LEVEL="INFO",
        WEBHOOK_QUEUE_CONCURRENCY="1",
        MESSAGE_QUEUE_CONCURRENCY="1",
        BOOKING_QUEUE_CONCURRENCY="1",
        EMAIL_QUEUE_CONCURRENCY="1",
    )
    log_path = tmp_path / "make-run.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            ["make", "run"],
            cwd=project,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{web_port}"

    def answers(path: str, expected: int = 200, url: str = base) -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"make run exited:\n{log_path.read_text()[-5000:]}")
        try:
            return httpx.get(url + path, timeout=2).status_code == expected
        except httpx.HTTPError:
            return False

    try:
        wait_until(lambda: answers("/healthz"), timeout=180, message="web up")
        assert answers("/api/docs/")
        assert answers("/admin/login/")
        # The webhook on the same URL and port (the lean path, issue 17),
        # signed with the development secret make run wrote.
        secret = re.search(
            r"^WHATSAPP_APP_SECRET=(.+)$",
            (project / "var" / "dev.env").read_text(),
            re.MULTILINE,
        ).group(1)
        body = b'{"object": "whatsapp_business_account", "entry": []}'
        signature = hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        answer = httpx.post(
            f"{base}/webhooks/whatsapp/",
            content=body,
            headers={"X-Hub-Signature-256": f"sha256={signature}"},
            timeout=10,
        )
        assert (answer.status_code, answer.text) == (200, "EVENT_RECEIVED")
        bad = httpx.post(f"{base}/webhooks/whatsapp/", content=body, timeout=10)
        assert bad.status_code == 403
        wait_until(
            lambda: answers("/", 401, f"http://127.0.0.1:{flower_port}"),
            timeout=60,
            message="flower refuses anonymous requests",
        )

        def all_workers_ready() -> bool:
            text = log_path.read_text(errors="replace")
            return all(
                re.search(rf"{name}@\S+ ready\.", text)
                for name in (
                    "webhook",
                    "message-status",
                    "reminder",
                    "email-outbound",
                    "media",
                )
            )

        wait_until(all_workers_ready, timeout=120, message="five workers ready")
        text = log_path.read_text(errors="replace")
        assert "beat: Starting..." in text
        assert "demo: log in" in text
        assert (project / "var" / "redis" / "redis.pid").exists()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=10)
    # Ctrl-C stopped everything, including the Redis it started.
    wait_until(
        lambda: not answers_redis(redis_port), timeout=20, message="redis stopped"
    )


def answers_redis(port: int) -> bool:
    import redis

    try:
        return redis.Redis(port=port, socket_connect_timeout=0.5).ping()
    except redis.RedisError:
        return False
