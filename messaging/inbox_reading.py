"""Reading a webhook body: Meta batches at every level (entries, changes,
messages, statuses); a walk finds the salon of each change, the inbound
messages to store and the statuses to fan out, and notes what it skipped."""

import logging
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

from bookings.models import Salon
from messaging.inbox_storage import Inbound
from messaging.payloads import as_dict, as_list
from messaging.services import STATUS_FIELDS
from messaging.template_status import (
    TEMPLATE_STATUS_FIELD,
    template_status_updates_apply,
)

logger = logging.getLogger(__name__)


@dataclass
class Outcome:
    """What one body came to: notes for its event, statuses to fan out."""

    notes: list[str] = dataclass_field(default_factory=list)
    statuses: dict[str, list[dict]] = dataclass_field(default_factory=dict)
    values: int = 0
    ignored_values: int = 0

    @property
    def ignored_only(self) -> bool:
        return self.values > 0 and self.ignored_values == self.values


def _phone_number_id(value: dict) -> str:
    return str(as_dict(value.get("metadata")).get("phone_number_id") or "")


def _changes(payload: Any):
    for entry in as_list(as_dict(payload).get("entry")):
        for change in as_list(as_dict(entry).get("changes")):
            yield as_dict(change)


def salons_by_number(payloads) -> dict[str, Salon]:
    """The salons the bodies are for, in one query."""
    numbers = {
        _phone_number_id(as_dict(change.get("value")))
        for payload in payloads
        for change in _changes(payload)
    }
    numbers.discard("")
    if not numbers:
        return {}
    return {
        salon.whatsapp_phone_number_id: salon
        for salon in Salon.objects.filter(whatsapp_phone_number_id__in=numbers)
    }


def payload_walk(payload: Any, salons: dict[str, Salon], outcome: Outcome):
    """Walk every entry, change, message and status (Meta batches at every
    level); returns the inbound messages to store."""
    inbound = Inbound()
    # Template lifecycle (messaging/template_status.py): its own walk.
    seen, unapplied = template_status_updates_apply(payload, outcome.notes)
    outcome.values += seen
    outcome.ignored_values += unapplied
    for change in _changes(payload):
        if change.get("field") == TEMPLATE_STATUS_FIELD:
            continue
        if change.get("field", "messages") != "messages":
            # Not a number's messages (template status updates belong to the
            # WABA): acknowledged, and nothing here to apply.
            outcome.values += 1
            outcome.ignored_values += 1
            outcome.notes.append(f"skipped field {change.get('field')!r}")
            continue
        value = as_dict(change.get("value"))
        outcome.values += 1
        phone_number_id = _phone_number_id(value)
        salon = salons.get(phone_number_id)
        if salon is None:
            outcome.ignored_values += 1
            outcome.notes.append(f"unknown phone_number_id {phone_number_id!r}")
            logger.warning(
                "Webhook for unknown phone_number_id %r ignored", phone_number_id
            )
            continue
        for error in as_list(value.get("errors")):
            error = as_dict(error)
            outcome.notes.append(f"value error {error.get('code')}")
            logger.warning(
                "WhatsApp reported an error for salon %s: %s %s (%s)",
                salon.pk,
                error.get("code"),
                error.get("title"),
                as_dict(error.get("error_data")).get("details", ""),
            )
        inbound.add_value(salon, value, outcome.notes)
        _value_statuses(salon, value, outcome)
    if outcome.values == 0:
        outcome.notes.append("no entry[].changes[] in the body")
    return inbound


def payload_statuses(payload: Any, salons: dict[str, Salon]) -> dict[str, list[dict]]:
    """Only the delivery statuses of a stored body, by salon id, touching
    nothing (for a re-drive of statuses: messaging/status_redrive.py)."""
    outcome = Outcome()
    for change in _changes(payload):
        if change.get("field", "messages") != "messages":
            continue
        value = as_dict(change.get("value"))
        salon = salons.get(_phone_number_id(value))
        if salon is not None:
            _value_statuses(salon, value, outcome)
    return outcome.statuses


def _value_statuses(salon: Salon, value: dict, outcome: Outcome) -> None:
    statuses = [
        status
        for status in as_list(value.get("statuses"))
        if _status_is_readable(status, outcome)
    ]
    if statuses:
        outcome.statuses.setdefault(str(salon.pk), []).extend(statuses)


def _status_is_readable(status: Any, outcome: Outcome) -> bool:
    status = as_dict(status)
    if status.get("id") and status.get("status") in STATUS_FIELDS:
        return True
    outcome.notes.append(
        f"skipped status {status.get('status')!r} for {status.get('id')!r}"
    )
    return False
