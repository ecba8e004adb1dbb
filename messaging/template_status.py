"""Meta's template lifecycle: ``message_template_status_update`` webhooks
(approved, rejected, paused, disabled...) applied to the matching template:
the salon by its WhatsApp Business Account id (the entry's id), the template
by name and language, with Meta's reason. A paused or disabled template is
not sent (only approved ones are: messaging.selectors.template_for_language).
"""

import logging
from typing import Any

from django.db import transaction

from bookings.models import Salon
from messaging.models import MessageTemplate
from messaging.payloads import as_dict, as_list

logger = logging.getLogger(__name__)

TEMPLATE_STATUS_FIELD = "message_template_status_update"

#: Meta's events -> our statuses. Others (FLAGGED, IN_APPEAL...) are noted only.
EVENT_STATUSES = {
    "APPROVED": MessageTemplate.Status.APPROVED,
    "REINSTATED": MessageTemplate.Status.APPROVED,
    "UNPAUSED": MessageTemplate.Status.APPROVED,
    "REJECTED": MessageTemplate.Status.REJECTED,
    "PENDING": MessageTemplate.Status.PENDING,
    "PAUSED": MessageTemplate.Status.PAUSED,
    "DISABLED": MessageTemplate.Status.DISABLED,
    "PENDING_DELETION": MessageTemplate.Status.DISABLED,
}


def _reason(value: dict) -> str:
    reason = str(value.get("reason") or "")
    reason = "" if reason.upper() == "NONE" else reason
    other = as_dict(value.get("other_info"))
    details = " ".join(
        str(part) for part in (other.get("title"), other.get("description")) if part
    )
    disabled = as_dict(value.get("disable_info")).get("disable_date")
    if disabled:
        details = f"{details} disable_date {disabled}".strip()
    return "; ".join(part for part in (reason, details) if part)[:255]


def _updates(payload: Any):
    for entry in as_list(as_dict(payload).get("entry")):
        entry = as_dict(entry)
        for change in as_list(entry.get("changes")):
            change = as_dict(change)
            if change.get("field") == TEMPLATE_STATUS_FIELD:
                yield str(entry.get("id") or ""), as_dict(change.get("value"))


def template_status_updates_apply(payload: Any, notes: list[str]) -> tuple[int, int]:
    """Apply every template status update in the body, in order; returns
    (template status updates seen, those that changed nothing). What could not
    be applied (unknown account, template or event) is noted, never raised. A
    body without any costs no query."""
    updates = list(_updates(payload))
    if not updates:
        return 0, 0
    with transaction.atomic():
        applied = _updates_apply(updates, notes)
    return len(updates), len(updates) - applied


def _updates_apply(updates: list[tuple[str, dict]], notes: list[str]) -> int:
    applied = 0
    accounts = {account for account, _ in updates if account}
    salons: dict[str, list[Salon]] = {}
    for salon in Salon.objects.filter(whatsapp_business_account_id__in=accounts):
        salons.setdefault(salon.whatsapp_business_account_id, []).append(salon)
    for account, value in updates:
        event = str(value.get("event") or "").upper()
        name = str(value.get("message_template_name") or "")
        language = str(value.get("message_template_language") or "")
        status = EVENT_STATUSES.get(event)
        if status is None:
            notes.append(f"template {name!r} ({language}): event {event!r} noted")
            continue
        if account not in salons:
            notes.append(f"template update for unknown business account {account!r}")
            continue
        changed = 0
        for template in MessageTemplate.objects.select_for_update().filter(
            salon__in=salons[account], name=name, language=language
        ):
            template.status = status
            template.status_reason = _reason(value)
            # save(), not update(): the template:{id} cache is invalidated by
            # its post_save receiver after commit.
            template.save(update_fields=["status", "status_reason", "updated_at"])
            changed += 1
        if changed:
            applied += 1
            notes.append(f"template {name!r} ({language}) {status}")
            logger.info("Template %s (%s) is %s by Meta", name, language, status)
        else:
            notes.append(f"unknown template {name!r} ({language}) for {account!r}")
    return applied
