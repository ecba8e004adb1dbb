"""Pacing state, for people: per business number its rate (the salon's
override or the default), the effective rate after Meta's 130429s, tokens
left in the current second, deferred sends and the last 130429. Read by the
queue page and exported on /metrics (registered in MessagingConfig.ready)."""

from datetime import UTC, datetime
from typing import Any

from prometheus_client.core import GaugeMetricFamily

from bookings.models import Salon
from messaging.governed_sending import governed_rate, salon_rate
from messaging.send_errors import send_errors_by_salon
from messaging.throughput import throughput_numbers, throughput_state


def pacing_overview() -> list[dict[str, Any]]:
    """The numbers that sent in the last hour, latest first, with their salon."""
    numbers = throughput_numbers()
    salons = {
        salon.whatsapp_phone_number_id: salon
        for salon in Salon.objects.filter(whatsapp_phone_number_id__in=numbers).only(
            "id", "name", "whatsapp_phone_number_id", "whatsapp_throughput_per_second"
        )
    }
    rows = []
    for number in numbers:
        salon = salons.get(number)
        limit = salon_rate(salon)
        state = throughput_state(number, rate=governed_rate(limit))
        state["limit"] = limit
        state["salon_id"] = str(salon.pk) if salon else ""
        state["salon_name"] = salon.name if salon else ""
        last = state["last_130429"]
        state["last_130429_at"] = datetime.fromtimestamp(last, UTC) if last else None
        rows.append(state)
    return rows


class PacingCollector:
    """whatsapp_throughput_* gauges per number, whatsapp_send_errors per salon."""

    def collect(self):
        labels = ["phone_number_id"]
        rate = GaugeMetricFamily(
            "whatsapp_throughput_rate", "Messages/s allowed per number.", labels=labels
        )
        effective = GaugeMetricFamily(
            "whatsapp_throughput_effective_rate",
            "Messages/s after Meta's 130429 back-off.",
            labels=labels,
        )
        tokens = GaugeMetricFamily(
            "whatsapp_throughput_tokens",
            "Sends left in the current one-second window.",
            labels=labels,
        )
        deferred = GaugeMetricFamily(
            "whatsapp_throughput_deferred",
            "Sends deferred for want of a token (last hour of activity).",
            labels=labels,
        )
        last = GaugeMetricFamily(
            "whatsapp_throughput_last_130429_timestamp_seconds",
            "When Meta last answered 130429 (0: never).",
            labels=labels,
        )
        for state in pacing_overview():
            number = [state["phone_number_id"]]
            rate.add_metric(number, state["limit"])
            effective.add_metric(number, state["effective_rate"])
            tokens.add_metric(number, state["tokens"])
            deferred.add_metric(number, state["deferred"])
            last.add_metric(number, state["last_130429"] or 0)
        yield from (rate, effective, tokens, deferred, last)
        errors = GaugeMetricFamily(
            "whatsapp_send_errors",
            "Failed sends a person must act on, last 24 h.",
            labels=["salon", "kind"],
        )
        for salon_id, kinds in send_errors_by_salon().items():
            for kind, count in kinds.items():
                errors.add_metric([salon_id, kind], count)
        yield errors
