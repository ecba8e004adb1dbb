"""Messages that change other messages: an edit rewrites the message it
edits (keeping every earlier version), a reaction replaces the same
customer's earlier reaction to the same message (an empty emoji removes it).
A constant number of queries per batch, and idempotent: a replayed edit or
reaction changes nothing twice."""

from typing import Any

from messaging.models import Message
from messaging.payloads import as_dict


def edits_apply(edits: list[Message]) -> list[Message]:
    """Apply each edit (an unsaved row of type ``edit``) to the message it
    names, in the same salon; returns the edits whose original is not stored,
    to be kept as messages of their own."""
    if not edits:
        return []
    wanted = {str(row.content.get("original_message_id") or "") for row in edits}
    originals = {
        (message.salon_id, message.wamid): message
        for message in Message.objects.select_for_update()
        .filter(wamid__in=wanted - {""})
        .only("pk", "salon_id", "wamid", "body", "content", "created_at")
    }
    unapplied, changed = [], {}
    for edit in sorted(edits, key=lambda row: row.created_at):
        original = originals.get(
            (edit.salon_id, str(edit.content.get("original_message_id") or ""))
        )
        if original is None:
            unapplied.append(edit)
            continue
        if _edit_into(original, edit):
            changed[original.pk] = original
    if changed:
        Message.objects.bulk_update(list(changed.values()), ["body", "content"])
    return unapplied


def _edit_into(original: Message, edit: Message) -> bool:
    """The original takes the edit's text; its earlier versions are kept in
    ``content["edits"]``, oldest first. False if the edit was applied already."""
    content = dict(original.content or {})
    history: list[dict[str, Any]] = list(content.get("edits") or [])
    if any(entry.get("edit_wamid") == edit.wamid for entry in history):
        return False
    edited_at = edit.created_at.isoformat()
    history.append(
        {
            "edit_wamid": edit.wamid,
            "edited_at": edited_at,
            "previous_body": original.body,
        }
    )
    content["edits"] = history
    # An edit older than one applied already only joins the history.
    if edited_at >= str(content.get("edited_at") or ""):
        new_content = as_dict(edit.content.get("content"))
        content.update({k: v for k, v in new_content.items() if k != "edits"})
        content["edited_at"] = edited_at
        original.body = edit.body
    original.content = content
    return True


_REACTION_FIELDS = ("pk", "wamid", "conversation_id", "reaction_to_id")
_REACTION_FIELDS += ("created_at", "content")


def reactions_supersede(rows: list[Message]) -> None:
    """A customer has one reaction per message: each newer reaction (or a
    removal) marks the earlier ones of the same conversation to the same
    message as replaced."""
    targets = {row.reaction_to_id for row in rows if row.type == "reaction"}
    targets.discard(None)
    if not targets:
        return
    reactions = list(
        Message.objects.filter(
            type="reaction",
            direction=Message.Direction.INBOUND,
            reaction_to_id__in=targets,
        ).only(
            "pk", "wamid", "conversation_id", "reaction_to_id", "created_at", "content"
        )
    )
    latest: dict[tuple, Message] = {}
    for reaction in sorted(reactions, key=lambda r: (r.created_at, r.wamid or "")):
        latest[(reaction.conversation_id, reaction.reaction_to_id)] = reaction
    changed = []
    for reaction in reactions:
        newest = latest[(reaction.conversation_id, reaction.reaction_to_id)]
        replaced = None if newest.pk == reaction.pk else newest.wamid
        if (reaction.content or {}).get("replaced_by") != replaced:
            reaction.content = {**(reaction.content or {}), "replaced_by": replaced}
            changed.append(reaction)
    if changed:
        Message.objects.bulk_update(changed, ["content"])
