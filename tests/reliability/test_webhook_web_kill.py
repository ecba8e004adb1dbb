"""SIGKILL the web process (the Procfile's web line: granian serving saas.wsgi,
so the lean path and its group commit) in the middle of a burst of webhooks:
every webhook it acknowledged is stored. Nothing here is timed: the kill comes
once a number of acknowledgements were counted, whatever the machine's speed."""

import json
import re
import signal
import threading
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from messaging.models import WebhookEvent
from tests.messaging.conftest import sign, text_body
from tests.processes import ROOT, ManagedProcess, free_port
from tests.utils import wait_until

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

BURST = 3000
KILL_AFTER_ACKS = 300
CLIENTS = 24


def procfile_web_args(port: int) -> list[str]:
    line = next(
        line
        for line in (ROOT / "Procfile").read_text().splitlines()
        if line.startswith("web:")
    )
    return ["bash", "-c", "exec " + re.sub(r"^web:\s*", "", line)]


def test_every_acknowledged_webhook_survives_a_sigkill_of_the_web(
    salon, subprocess_env, tmp_path
):
    port = free_port()
    web = ManagedProcess(
        name="web",
        args=procfile_web_args(port),
        env={**subprocess_env, "WEB_PORT": str(port), "WEB_CONCURRENCY": "2"},
        log_path=tmp_path / "web.log",
    ).start()
    try:
        base = f"http://127.0.0.1:{port}"

        def web_up() -> bool:
            assert web.alive, web.log()[-3000:]
            try:
                return httpx.get(f"{base}/healthz", timeout=2).status_code == 200
            except httpx.TransportError:
                return False

        wait_until(web_up, timeout=60, message="web up")

        acked: list[str] = []
        refused: list[str] = []
        lock = threading.Lock()
        killed = threading.Event()
        local = threading.local()

        def post(n: int) -> None:
            wamid = f"wamid.KILL{n:05d}"
            raw = json.dumps(
                text_body(wamid, wa_id=f"1650555{n % 40:04d}", text=f"m{n}")
            ).encode()
            if not hasattr(local, "http"):
                local.http = httpx.Client(base_url=base, timeout=10)
            try:
                status = local.http.post(
                    "/webhooks/whatsapp/",
                    content=raw,
                    headers={
                        "X-Hub-Signature-256": sign(raw),
                        "Content-Type": "application/json",
                    },
                ).status_code
            except httpx.TransportError:
                status = None
            with lock:
                if status == 200:
                    acked.append(wamid)
                    if len(acked) >= KILL_AFTER_ACKS and not killed.is_set():
                        killed.set()
                        web.kill(signal.SIGKILL)
                else:
                    refused.append(wamid)

        with ThreadPoolExecutor(max_workers=CLIENTS) as pool:
            list(pool.map(post, range(BURST)))
    finally:
        web.stop()

    assert killed.is_set(), "the web was not killed: too few acknowledgements"
    assert refused, "the kill did not land mid-burst"
    stored = {
        json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        for body in WebhookEvent.objects.values_list("body", flat=True)
    }
    assert set(acked) - stored == set(), "acknowledged but not stored"
    assert len(acked) >= KILL_AFTER_ACKS
