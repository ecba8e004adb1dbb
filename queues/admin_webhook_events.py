"""The queue page's action on quarantined webhook events (issue 17)."""

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.urls import reverse

from messaging.inbox import webhook_event_release
from queues.definitions import WEBHOOK


def webhook_event_release_post(request, event_id: int):
    """Re-drive a quarantined webhook event (operators only, wired by the page)."""
    if webhook_event_release(event_id=event_id):
        messages.success(request, f"Webhook event {event_id} re-driven.")
    else:
        messages.error(request, f"Webhook event {event_id} is not quarantined.")
    return HttpResponseRedirect(reverse("admin:queues-queue", args=[WEBHOOK.alias]))
