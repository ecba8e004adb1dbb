"""The governor's spreading (messaging/throughput.py, spread_burst): slots
reserved ahead in batches, never more than the limit in any window of slot
times, and the slow start of an idle number."""

import pytest

from messaging.throughput import throughput_acquire_many, throughput_state
from tests.graph_api import max_in_window
from tests.utils import wait_until

PHONE = "106540352242922"
RATE = 76  # 80/s less the 5% headroom, as governed_sending paces it


def reserve(count: int, tag: str, *, ahead: float = 1.5, burst: int = 4):
    """A batch's slots, as one process's round reserves them: the slot times
    (server seconds) of the granted sends, and how many were denied."""
    grants = throughput_acquire_many(
        [(PHONE, f"{tag}-{n}") for n in range(count)],
        rate=RATE,
        spread_burst=burst,
        spread_ahead=ahead,
    )
    slots = [grant.at + grant.retry_after for grant in grants if grant]
    return slots, sum(1 for grant in grants if not grant)


@pytest.fixture
def no_slow_start(settings):
    settings.WHATSAPP_THROUGHPUT_SLOW_START = 1.0


def test_batches_reserve_blocks_that_follow_each_other(no_slow_start):
    # Three processes' rounds of 25: each gets a block of slots after the
    # blocks already reserved, instead of interleaving with them.
    first, _ = reserve(25, "a")
    second, _ = reserve(25, "b")
    third, _ = reserve(25, "c")
    assert max(first) < min(second) and max(second) < min(third)
    assert third[-1] - first[0] == pytest.approx(74 / RATE, abs=0.05)


def test_slots_reserved_ahead_never_hold_more_than_the_limit_in_a_window(
    no_slow_start,
):
    slots, denied = [], 0
    for n in range(12):  # 300 sends, 3 s worth, in batches of 25
        taken, refused = reserve(25, f"r{n}", ahead=5.0)
        slots += taken
        denied += refused
    assert denied == 0 and len(slots) == 300
    slots.sort()
    assert max_in_window(slots, 1.0) <= RATE
    # ... and the limit is used: about 4 s of slots for 300 sends at 76/s.
    assert slots[-1] - slots[0] == pytest.approx(299 / RATE, abs=0.1)


def test_beyond_the_horizon_a_send_is_denied_with_when_to_ask_again(no_slow_start):
    grants = throughput_acquire_many(
        [(PHONE, f"far-{n}") for n in range(200)],
        rate=RATE,
        spread_burst=4,
        spread_ahead=1.0,
    )
    granted = [grant for grant in grants if grant]
    denied = [grant for grant in grants if not grant]
    # About 1 s reserved ahead plus the burst of the first slots; no more.
    assert RATE <= len(granted) <= RATE + 4
    assert max(grant.retry_after for grant in granted) <= 1.0
    # The rest ask again when their slot comes within the horizon, one
    # interval after another: not all at once.
    waits = [grant.retry_after for grant in denied]
    assert 0 < waits[0] <= 2 / RATE and waits == sorted(waits)
    assert waits[-1] == pytest.approx(len(waits) / RATE, abs=0.05)


def test_an_idle_number_starts_at_half_its_rate_and_ramps_up(settings):
    settings.WHATSAPP_THROUGHPUT_SLOW_START_SECONDS = 1.0
    slots, _ = reserve(RATE, "cold", ahead=3.0)
    slots.sort()
    first_second = sum(1 for slot in slots if slot < slots[0] + 1.0)
    # From 38/s to 76/s over the first second: about 57 slots, not 76.
    assert 45 <= first_second <= 66
    assert throughput_state(PHONE, rate=RATE)["effective_rate"] < RATE
    wait_until(
        lambda: throughput_state(PHONE, rate=RATE)["effective_rate"] == RATE,
        timeout=5,
        interval=0.05,
    )


def test_a_busy_number_does_not_start_slow_again(settings):
    settings.WHATSAPP_THROUGHPUT_SLOW_START_SECONDS = 0.2
    reserve(5, "warm")
    wait_until(
        lambda: throughput_state(PHONE, rate=RATE)["effective_rate"] == RATE,
        timeout=5,
        interval=0.05,
    )
    reserve(5, "still-warm")  # within a window of the last slot
    assert throughput_state(PHONE, rate=RATE)["effective_rate"] == RATE
