"""Every outbound WhatsApp send goes through here: a token from the throughput
governor (messaging/throughput.py) first, then the send; sends of one batch go
out at the same time, so a number's rate is reached at Meta's answer time.

A batch reserves its slots in one round trip (up to SPREAD_AHEAD_SECONDS
ahead), so the batches of several processes follow each other instead of
interleaving: a process whose batch is answered records it and reserves its
next while the others' reserved slots are still being sent, and the number's
slots never wait for a sender.

How many sends are in flight is sized from the number's rate and Meta's answer
time (``WHATSAPP_SEND_LATENCY_SECONDS``): 80/s x 0.3 s = 24 (never fewer than
``MIN_IN_FLIGHT``). A batch waits on one thread per send; each thread does
only the HTTP call, so the CPU per send is the call's, and the rate is the
governor's, not the worker's concurrency.

A send Meta answers 130429 asks for a token again at the reduced rate (see
``_call``). A send without a token, or one Meta answers 131056 or 130429 again
(which penalizes the pair or the number), is *deferred*: it carries
``retry_after`` and no error, and its caller sends it again later without
counting an attempt.
"""

import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from django.conf import settings

from messaging.throughput import (
    PENALIZED_CODES,
    Acquisition,
    throughput_acquire_many,
    throughput_deferred,
    throughput_penalize,
)
from messaging.whatsapp import SEND_CONNECTIONS, SendResult, WhatsAppError

#: Fewest sends a batch keeps in flight, whatever the rate.
MIN_IN_FLIGHT = 8
#: Most threads one process sends on (a 1,000/s number at 0.3 s needs 300),
#: each with its own kept-alive connection.
MAX_IN_FLIGHT = SEND_CONNECTIONS
#: A number's grants are spaced evenly, this many seconds' worth at once at
#: most (messaging/throughput.py, spread_burst).
SPREAD_BURST_SECONDS = 0.05
#: A send may reserve a slot this far ahead and sleep until it (no polling):
#: room for the batches of three processes queued behind each other.
SPREAD_AHEAD_SECONDS = 1.5
#: A sender thread waits for a token this long at most; then the send is
#: deferred (its caller sends it again later, without spending an attempt).
TOKEN_WAIT_SECONDS = 2.0
#: Meta's "too fast" for the number (the pair's is 131056).
TOO_FAST = 130429
#: After a 130429 a send asks for a new token this many times in its thread
#: before it is deferred to its caller.
RESENDS_AFTER_TOO_FAST = 2


def salon_rate(salon) -> int:
    """Messages per second Meta allows the salon's number."""
    return int(
        getattr(salon, "whatsapp_throughput_per_second", None)
        or settings.WHATSAPP_THROUGHPUT_PER_SECOND
    )


def governed_rate(rate: float) -> float:
    """The rate the governor paces a number at: Meta's, less the headroom."""
    return max(1.0, rate * (1 - settings.WHATSAPP_THROUGHPUT_HEADROOM))


def sends_in_flight(rate: float) -> int:
    """Sends to keep in flight to reach ``rate`` at Meta's answer time."""
    wanted = math.ceil(rate * settings.WHATSAPP_SEND_LATENCY_SECONDS)
    return min(MAX_IN_FLIGHT, max(MIN_IN_FLIGHT, wanted))


@dataclass
class GovernedSend:
    phone_number_id: str
    recipient: str
    rate: int
    call: Callable[[], SendResult]
    key: Any = None  # the caller's handle (a reminder id)


@dataclass
class SendOutcome:
    send: GovernedSend
    result: SendResult | None = None
    error: WhatsAppError | None = None
    #: Seconds to wait before asking the governor again; None when not deferred.
    retry_after: float | None = None

    @property
    def deferred(self) -> bool:
        return self.retry_after is not None


class SendDeferred(Exception):
    """No token now, or Meta said too fast: send again in ``retry_after`` s."""

    def __init__(self, retry_after: float, reason: str):
        super().__init__(reason)
        self.retry_after = retry_after


_pool: tuple[int, ThreadPoolExecutor] | None = None
_pool_lock = threading.Lock()


def _executor() -> ThreadPoolExecutor:
    """One pool per process (a prefork child makes its own); threads are
    started as sends need them, up to MAX_IN_FLIGHT."""
    global _pool
    with _pool_lock:
        if _pool is None or _pool[0] != os.getpid():
            _pool = (
                os.getpid(),
                ThreadPoolExecutor(MAX_IN_FLIGHT, thread_name_prefix="wa-send"),
            )
        return _pool[1]


def _acquire(sends: Sequence[GovernedSend]) -> list[Acquisition]:
    """A slot for each send, reserved in one round trip per rate."""
    grants: list[Acquisition | None] = [None] * len(sends)
    by_rate: dict[float, list[int]] = {}
    for index, send in enumerate(sends):
        by_rate.setdefault(governed_rate(send.rate), []).append(index)
    for rate, indexes in by_rate.items():
        taken = throughput_acquire_many(
            [(sends[i].phone_number_id, sends[i].recipient) for i in indexes],
            rate=rate,
            spread_burst=max(1, math.ceil(rate * SPREAD_BURST_SECONDS)),
            spread_ahead=SPREAD_AHEAD_SECONDS,
        )
        for index, grant in zip(indexes, taken, strict=True):
            grants[index] = grant
    return grants


def _token(send: GovernedSend, grant: Acquisition | None = None) -> float:
    """Wait in this thread for the send's token while it is near; 0 when
    granted, else the seconds still to wait (the caller defers the send).
    ``grant`` is the decision already taken for it with its batch."""
    waited = 0.0
    while True:
        if grant is None:
            grant = _acquire([send])[0]
        if grant:
            time.sleep(grant.retry_after)  # until the slot reserved for it
            return 0.0
        if waited + grant.retry_after > TOKEN_WAIT_SECONDS:
            throughput_deferred(send.phone_number_id)
            return max(grant.retry_after, 0.001)
        time.sleep(grant.retry_after)
        waited += grant.retry_after
        grant = None


def _call(send: GovernedSend, grant: Acquisition | None = None) -> SendOutcome:
    """Token, then send, in the same thread: what Meta counts is when a send
    arrives, so nothing may come between the grant and the request.

    A 130429 cuts the number's rate (throughput_penalize) and the send asks
    the governor again at once, up to RESENDS_AFTER_TOO_FAST times: its next
    token is paced at the reduced rate, so the sends Meta refused together do
    not all come back together one fixed second later (they did, and met the
    same full window again: whole seconds without a send). A 131056 (the
    pair's pace) or no token soon enough defers the send to its caller."""
    refused: SendOutcome | None = None  # the last 130429, while resending
    for _ in range(1 + RESENDS_AFTER_TOO_FAST):
        wait = _token(send, grant)
        grant = None
        if wait:
            error = refused.error if refused else None
            return SendOutcome(send, error=error, retry_after=wait)
        try:
            return SendOutcome(send, result=send.call())
        except WhatsAppError as exc:
            if exc.code not in PENALIZED_CODES:
                return SendOutcome(send, error=exc)
            wait = throughput_penalize(
                send.phone_number_id,
                exc.code,
                recipient=send.recipient,
                rate=governed_rate(send.rate),
            )
            throughput_deferred(send.phone_number_id)
            refused = SendOutcome(send, error=exc, retry_after=max(wait, 0.05))
            if exc.code != TOO_FAST:
                return refused
    return refused


def governed_sends(sends: Sequence[GovernedSend]) -> list[SendOutcome]:
    """Every send through the governor, all at the same time: their slots
    reserved in one round trip, then one thread per send sleeping until its
    slot; outcomes in the order given. Denied sends are not sent and come
    back deferred."""
    if not sends:
        return []
    grants = _acquire(sends)
    if len(sends) == 1:
        return [_call(sends[0], grants[0])]
    futures = [
        _executor().submit(_call, send, grant)
        for send, grant in zip(sends, grants, strict=True)
    ]
    return [future.result() for future in futures]


def governed_send(send: GovernedSend) -> SendResult:
    """One send through the governor: its result, WhatsAppError when Meta
    refused it, SendDeferred when it must wait (no attempt spent)."""
    outcome = governed_sends([send])[0]
    if outcome.deferred:
        reason = (
            f"WhatsApp throughput: Meta answered {outcome.error.code}"
            if outcome.error
            else "WhatsApp throughput: no token for this number now"
        )
        raise SendDeferred(outcome.retry_after, reason)
    if outcome.error:
        raise outcome.error
    return outcome.result
