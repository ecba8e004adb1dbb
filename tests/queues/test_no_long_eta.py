"""Static guard: no code parks a Celery ETA or countdown in the broker for
longer than the visibility timeout (it would be redelivered, and sent twice)."""

import ast
from pathlib import Path

from django.conf import settings

from queues.definitions import QUEUES
from tests.processes import ROOT

APP_DIRS = ["saas", "bookings", "messaging", "notifications", "queues"]


def python_files():
    for app in APP_DIRS:
        for path in (ROOT / app).rglob("*.py"):
            if "migrations" not in path.parts:
                yield path


def literal_seconds(node: ast.AST) -> float | None:
    try:
        value = ast.literal_eval(node)
    except ValueError:
        return None
    return float(value) if isinstance(value, int | float) else None


def long_delays(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call):
            continue
        for keyword in node.keywords:
            if keyword.arg == "eta":
                found.append(
                    f"{path}:{node.lineno}: eta= (absolute ETAs are not allowed)"
                )
            elif keyword.arg in ("countdown", "retry_backoff_max"):
                seconds = literal_seconds(keyword.value)
                if (
                    seconds is not None
                    and seconds >= settings.CELERY_VISIBILITY_TIMEOUT
                ):
                    found.append(f"{path}:{node.lineno}: {keyword.arg}={seconds:g}")
    return found


def test_no_countdown_or_eta_beyond_visibility_timeout():
    offenders = [line for path in python_files() for line in long_delays(path)]
    assert offenders == []


def test_queue_retry_delays_fit_the_visibility_timeout():
    for spec in QUEUES:
        assert spec.longest_retry_delay < settings.CELERY_VISIBILITY_TIMEOUT, spec.name


def test_the_guard_catches_an_offender(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("task.apply_async(countdown=86400)\ntask.apply_async(eta=when)\n")
    assert len(long_delays(bad)) == 2
