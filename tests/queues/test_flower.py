"""Flower (scripts/flower.sh, the Procfile's) refuses anonymous requests."""

import base64
import subprocess

import httpx
import pytest

from tests.processes import ROOT, ManagedProcess, free_port
from tests.utils import wait_until

pytestmark = pytest.mark.django_db(transaction=True)


def test_flower_refuses_to_start_without_auth(subprocess_env):
    env = {k: v for k, v in subprocess_env.items() if k != "FLOWER_BASIC_AUTH"}
    result = subprocess.run(
        ["./scripts/flower.sh"], cwd=ROOT, env=env, capture_output=True, timeout=30
    )
    assert result.returncode == 1
    assert b"FLOWER_BASIC_AUTH" in result.stderr


def test_flower_answers_401_to_anonymous(subprocess_env, tmp_path):
    port = free_port()
    flower = ManagedProcess(
        name="flower",
        args=["./scripts/flower.sh"],
        env={
            **subprocess_env,
            "FLOWER_PORT": str(port),
            "FLOWER_BASIC_AUTH": "ops:s3cret-pass",
            "FLOWER_DB": str(tmp_path / "flower.db"),
        },
        log_path=tmp_path / "flower.log",
    ).start()
    base = f"http://127.0.0.1:{port}"

    def answers():
        assert flower.alive, flower.log()[-3000:]
        try:
            return httpx.get(f"{base}/", timeout=2)
        except httpx.TransportError:
            return None

    try:
        anonymous = wait_until(answers, timeout=60, message="flower listening")
        assert anonymous.status_code == 401
        assert anonymous.headers["www-authenticate"].lower().startswith("basic")
        wrong = httpx.get(f"{base}/", auth=("ops", "wrong"), timeout=5)
        assert wrong.status_code == 401
        token = base64.b64encode(b"ops:s3cret-pass").decode()
        ok = httpx.get(
            f"{base}/workers", headers={"Authorization": f"Basic {token}"}, timeout=10
        )
        assert ok.status_code == 200
        api = httpx.get(f"{base}/api/tasks", timeout=5)
        assert api.status_code == 401
    finally:
        flower.stop()
    assert (tmp_path / "flower.db").exists() or any(
        p.name.startswith("flower.db") for p in tmp_path.iterdir()
    )  # persistent history on disk
