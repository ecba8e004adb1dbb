"""The queue page's re-drive by filter: a form on the queue page, a
confirmation page that says how many jobs match (the dry run), then one
logged re-drive at a bounded rate (queues/redrive.py)."""

from django.contrib import messages
from django.http import HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from queues.redrive import RedriveFilter, queue_redrive_enqueue, redrive_matches

FIELDS = ("state", "task", "since", "until", "error", "text", "rate")


def _filter(source) -> tuple[RedriveFilter, float | None]:
    """The form's filter; ValueError with what is wrong."""
    when = {}
    for name in ("since", "until"):
        value = (source.get(name) or "").strip()
        when[name] = parse_datetime(value) if value else None
        if value and when[name] is None:
            raise ValueError(f"{name} is not a date and time (2026-12-01T09:00)")
        if when[name] is not None and timezone.is_naive(when[name]):
            when[name] = timezone.make_aware(when[name])
    rate_text = (source.get("rate") or "").strip()
    try:
        rate = float(rate_text) if rate_text else None
    except ValueError:
        raise ValueError("rate must be a number of jobs per second") from None
    where = RedriveFilter(
        state=source.get("state") or "failed",
        task=(source.get("task") or "").strip(),
        error=(source.get("error") or "").strip(),
        text=(source.get("text") or "").strip(),
        **when,
    )
    return where, rate


def redrive_page(request, spec, context):
    """GET: how many match (nothing happens); POST with confirm: re-drive."""
    back = reverse("admin:queues-queue", args=[spec.alias]) + "?state=failed"
    source = request.POST if request.method == "POST" else request.GET
    try:
        where, rate = _filter(source)
        if request.method == "POST" and request.POST.get("confirm") == "yes":
            action, ids = queue_redrive_enqueue(
                spec=spec, where=where, actor=request.user, rate=rate
            )
            messages.success(
                request,
                f"Re-driving {len(ids)} jobs of {spec.name} at "
                f"{action.params['rate']:g} a second.",
            )
            return HttpResponseRedirect(back)
        count = len(redrive_matches(spec=spec, where=where))
    except ValueError as exc:
        messages.error(request, f"Re-drive: {exc}.")
        return HttpResponseRedirect(back)
    described = ", ".join(f"{k}={v}" for k, v in where.as_params().items())
    return TemplateResponse(
        request,
        "admin/queues/confirm.html",
        context(
            request,
            f"Re-drive jobs of {spec.name}",
            spec=spec,
            count=count,
            question=f"Re-drive {count} jobs of {spec.name} matching {described}?",
            hidden={name: source.get(name, "") for name in FIELDS},
            action_url=reverse("admin:queues-redrive", args=[spec.alias]),
            back=back,
        ),
    )
