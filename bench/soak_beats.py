"""Which beats led and how often each periodic task was sent, from the beats'
logs (the scale-out soak runs two beats on the LeaderScheduler).

A send is a "Sending due task <entry>" line not followed by that beat's
"<entry> was sent by another beat this period; skipped" (the per-period claim)
or "Beat cannot claim <entry>". Across both beats, two sends of an interval
entry closer than 90 % of its period (the claim's lifetime) are the same
period sent twice: allowed only in the failover window, where a lease or a
claim written to the old primary may not have reached the replica.
"""

import re
import time
from collections import Counter
from datetime import UTC, datetime

import psycopg

STAMP = re.compile(r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3})")
SECONDS = {"microseconds": 1e-6, "seconds": 1, "minutes": 60, "hours": 3600}
SECONDS["days"] = 86400
#: A longer silence of an entry than this many periods is a beat not sending.
MAX_GAP_PERIODS = 3.0


def beat_sends(log: str) -> tuple[list[tuple[float, str]], int]:
    """(epoch, entry) of each send in one beat's log, and its skipped sends."""
    sends: list[tuple[float, str]] = []
    skipped = 0
    for line in log.splitlines():
        if "Sending due task " in line:
            stamp = STAMP.search(line)
            if stamp is None:
                continue
            at = datetime.strptime(stamp.group(1), "%Y-%m-%d %H:%M:%S,%f")
            entry = line.split("Sending due task ", 1)[1].rsplit(" (", 1)[0]
            sends.append((at.replace(tzinfo=UTC).timestamp(), entry))
        elif "sent by another beat this period" in line or "cannot claim" in line:
            for index in range(len(sends) - 1, -1, -1):
                entry = sends[index][1]
                if f"{entry} was sent by another beat" in line or (
                    f"Beat cannot claim {entry} (" in line
                ):
                    del sends[index]
                    skipped += 1
                    break
    return sends, skipped


def interval_periods(db_url: str) -> dict[str, float]:
    """Seconds between sends of each enabled interval entry."""
    with psycopg.connect(db_url) as conn:
        rows = conn.execute(
            "SELECT t.name, i.every, i.period FROM django_celery_beat_periodictask t "
            "JOIN django_celery_beat_intervalschedule i ON i.id = t.interval_id "
            "WHERE t.enabled"
        ).fetchall()
    return {name: every * SECONDS[period] for name, every, period in rows}


def beat_report(
    logs: dict[str, str], db_url: str, timeline, duration: float
) -> tuple[dict, dict[str, bool], list[str]]:
    """(what the beats did, invariants, report lines)."""
    offset = time.time() - time.monotonic()
    failover = [(lo, hi) for lo, hi, kind in timeline.fault_windows if kind == "any"]

    def in_failover(epoch: float) -> bool:
        at = epoch - offset - timeline.start
        return any(lo <= at <= hi for lo, hi in failover)

    beats, every_send = {}, []
    for name, log in logs.items():
        sends, skipped = beat_sends(log)
        beats[name] = {
            "took_the_lease": log.count("holds the lease: sending"),
            "stood_by": log.count("standing by"),
            "sends": len(sends),
            "skipped_by_claim": skipped,
        }
        every_send += [(at, entry, name) for at, entry in sends]
    entries = {}
    # Only entries with several periods in the load can show a period twice.
    for entry, period in sorted(interval_periods(db_url).items()):
        if period > duration / 3:
            continue
        times = sorted((at, beat) for at, e, beat in every_send if e == entry)
        gaps = [(b - a, b) for (a, _), (b, _) in zip(times, times[1:], strict=False)]
        twice = [at for gap, at in gaps if gap < 0.9 * period - 0.05]
        entries[entry] = {
            "period_s": period,
            "sends": dict(Counter(beat for _, beat in times)),
            "twice_in_a_period": len(twice),
            "twice_outside_failover": sum(not in_failover(at) for at in twice),
            "longest_gap_periods": round(max(g for g, _ in gaps) / period, 1)
            if gaps
            else None,
        }
    leaders = [name for name, beat in beats.items() if beat["took_the_lease"]]
    invariants = {
        "beats: one led at a time (each interval task once per period "
        "outside the failover)": bool(entries)
        and all(e["twice_outside_failover"] == 0 for e in entries.values()),
        f"beats: every interval task kept being sent (no gap over "
        f"{MAX_GAP_PERIODS:.0f} periods)": bool(entries)
        and all(
            e["longest_gap_periods"] is not None
            and e["longest_gap_periods"] <= MAX_GAP_PERIODS
            for e in entries.values()
        ),
    }
    lines = [
        f"beats: led {leaders}; "
        + "; ".join(
            f"{name} took the lease {b['took_the_lease']}x, sent {b['sends']}, "
            f"skipped by the claim {b['skipped_by_claim']}"
            for name, b in beats.items()
        ),
        "",
        "| periodic task | period s | sends per beat | twice in a period "
        "(outside failover) | longest gap (periods) |",
        "|---|---|---|---|---|",
        *(
            f"| {entry} | {e['period_s']:g} | {e['sends']} | "
            f"{e['twice_in_a_period']} ({e['twice_outside_failover']}) | "
            f"{e['longest_gap_periods']} |"
            for entry, e in entries.items()
        ),
    ]
    return {"beats": beats, "entries": entries, "leaders": leaders}, invariants, lines
