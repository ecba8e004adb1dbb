"""bench/reminders.py --backend cloud_api: the Graph API stand-in in process
mode (tests/graph_api.py, Meta's 80/s per number, 150 ms answers) and the
code before the throughput governor, run from its own source tree on a
database migrated by that tree, as the side-by-side baseline for the CPU per
send."""

import os
import re
import subprocess
import sys
import tarfile
from io import BytesIO
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: main before issue 15 (no governor): the "current code" of the issue.
BASELINE_REF = "8c19e73"


def standin_start(latency: float, log_path: Path) -> tuple[subprocess.Popen, str]:
    """``python -m tests.graph_api`` on a free port; (process, base url)."""
    log = open(log_path, "wb")
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.graph_api",
            "--port",
            "0",
            "--latency",
            str(latency),
            "--token",
            "bench-token",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=log,
        start_new_session=True,
    )
    line = process.stdout.readline().decode()
    match = re.search(r"GRAPH_STANDIN_LISTENING (\S+)", line)
    if not match:
        process.kill()
        sys.exit(f"bench: the Graph API stand-in did not start: {line!r}")
    return process, match.group(1)


def cloud_env(base_url: str) -> dict[str, str]:
    return {
        "WHATSAPP_BACKEND": "cloud_api",
        "WHATSAPP_API_BASE_URL": base_url,
        "WHATSAPP_ACCESS_TOKEN": "bench-token",
    }


def baseline_tree(ref: str = BASELINE_REF) -> Path:
    """The source at ``ref``, extracted once under var/ (git archive)."""
    target = ROOT / "var" / f"bench-baseline-{ref}"
    if not (target / "manage.py").exists():
        archive = subprocess.run(
            ["git", "archive", ref], cwd=ROOT, check=True, capture_output=True
        ).stdout
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(fileobj=BytesIO(archive)) as tar:
            tar.extractall(target, filter="data")
        (target / ".venv").symlink_to(ROOT / ".venv")
    return target


#: Run by the baseline tree's ``manage.py shell``: its own models, its own
#: bench's bookings (the schema of that code, not of this one).
BASELINE_SETUP = """
import sys
from datetime import datetime
sys.path.insert(0, ".")
from bench.reminders import create_bookings
create_bookings({count}, datetime.fromisoformat("{due_at}"))
"""
BASELINE_DISPATCH = (
    "from bookings.reminders import reminder_dispatch; reminder_dispatch()"
)


def baseline_manage(tree: Path, db_url: str, *args: str) -> str:
    """``manage.py`` of the baseline tree on the baseline database."""
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=tree,
        env={**os.environ, "DATABASE_URL": db_url, "LOG_LEVEL": "WARNING"},
        capture_output=True,
        text=True,
    )
    if done.returncode:
        sys.exit(f"bench: baseline manage.py {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def baseline_counts(db_url: str) -> dict:
    """The baseline run's rows, read with SQL (its schema is not this code's)."""
    import psycopg

    with psycopg.connect(db_url) as conn:
        one = lambda sql: conn.execute(sql).fetchone()[0]  # noqa: E731
        statuses = dict(
            conn.execute(
                "SELECT status, count(*) FROM bookings_bookingreminder "
                "WHERE kind = 'hour_before' GROUP BY status"
            ).fetchall()
        )
        return {
            "statuses": statuses,
            "last_sent": one(
                "SELECT max(sent_at) FROM bookings_bookingreminder "
                "WHERE kind = 'hour_before'"
            ),
            "messages": one("SELECT count(*) FROM messaging_message"),
            "wamids": one("SELECT count(DISTINCT wamid) FROM messaging_message"),
        }


def sends_report(client, phone: str, count: int) -> dict:
    """What the stand-in saw: accepted, distinct customers, the busiest
    second, refusals by code, and the sustained rate."""
    accepted = [s for s in client.accepted() if s["phone_number_id"] == phone]
    times = sorted(s["at"] for s in accepted)
    refused: dict[int, int] = {}
    for request in client.rejected():
        code = request.get("error_code")
        refused[code] = refused.get(code, 0) + 1
    per_second = _per_second(times)
    # Sustained: the full seconds between the first and the last (the ramp-up
    # and the tail are partial seconds).
    middle = per_second[1:-1] or per_second
    return {
        "accepted": len(accepted),
        "distinct": len({s["recipient"] for s in accepted}),
        "max_window": client.max_accepted_in_any_window(phone),
        "refused": refused,
        "span": times[-1] - times[0] if len(times) > 1 else 0.0,
        "sustained": sum(middle) / len(middle) if middle else 0.0,
        "min_second": min(middle) if middle else 0,
        "per_second": per_second,
    }


def _per_second(times: list[float]) -> list[int]:
    if not times:
        return []
    counts = [0] * (int(times[-1] - times[0]) + 1)
    for at in times:
        counts[int(at - times[0])] += 1
    return counts


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, 9)
        process.wait()
