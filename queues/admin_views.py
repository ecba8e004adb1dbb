"""The queue page, at QUEUE_DASHBOARD_PATH (/admin/queues/), inside Django admin
(staff only), mounted by the project's AdminSite (saas/admin_site.py).

Plain HTML forms do everything (pause, resume, clean, retry, remove), so the
page works without JavaScript; a small script refreshes the live parts every
few seconds without reloading. Bulk actions go through a confirmation page
that says how many jobs they will touch.
"""

import json
from functools import wraps

from django.conf import settings
from django.contrib import admin, messages
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from messaging.inbox_claims import webhook_events_quarantined
from messaging.pacing import pacing_overview
from queues import records, services
from queues.admin_charts import throughput_chart
from queues.admin_redrive import redrive_page
from queues.admin_test_job import test_job_post
from queues.admin_webhook_events import webhook_event_release_post
from queues.api.serializers import edited_job_errors
from queues.definitions import (
    QUEUES,
    WEBHOOK,
    QueueSpec,
    UnknownQueue,
    queue_page_prefix,
    queue_spec,
)
from queues.health import health_report
from queues.models import QueueAction
from queues.roles import user_can_operate_queues, user_can_view_queues
from queues.selectors import (
    job_data_for_display,
    job_detail,
    job_for_display,
    queue_jobs,
    queue_stats,
    queues_stats,
    workers_alive,
)

REFRESH_SECONDS = 5
PER_PAGE = 25


def _spec(alias: str) -> QueueSpec:
    try:
        return queue_spec(alias)
    except UnknownQueue:
        raise Http404(f"No queue {alias!r}") from None


def _spec_or_none(name: str) -> QueueSpec | None:
    try:
        return queue_spec(name)
    except UnknownQueue:
        return None


def viewers_only(view):
    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not user_can_view_queues(request.user):
            raise PermissionDenied("You may not view the queues.")
        return view(request, *args, **kwargs)

    return wrapped


def operators_only(view):
    """Every POST (and every confirmation page) needs the operating permission."""

    @wraps(view)
    def wrapped(request, *args, **kwargs):
        if not user_can_operate_queues(request.user):
            raise PermissionDenied("You may not operate the queues.")
        return view(request, *args, **kwargs)

    return wrapped


def _context(request, title: str, **extra) -> dict:
    return {
        **admin.site.each_context(request),
        "title": title,
        "can_operate": user_can_operate_queues(request.user),
        "refresh_seconds": REFRESH_SECONDS,
        "flower_url": settings.FLOWER_URL,
        **extra,
    }


@viewers_only
def overview_view(request):
    _, report = health_report()
    report_queues = report.get("queues") or {}
    stalled = {(a["alert"], a["target"]) for a in report.get("alerts", [])}
    rows = []
    for spec, stats in zip(QUEUES, queues_stats(), strict=True):
        rows.append(
            {
                "spec": spec,
                "stats": stats,
                "workers": workers_alive(spec.name),
                "chart": throughput_chart(spec.name),
                "health": report_queues.get(spec.name, {}),
                "stalled": (
                    "queue_stalled",
                    spec.name,
                )
                in stalled,
            }
        )
    return TemplateResponse(
        request,
        "admin/queues/overview.html",
        _context(
            request,
            "Queues",
            rows=rows,
            pacing=pacing_overview(),
            actions=QueueAction.objects.select_related("actor")[:15],
        ),
    )


@viewers_only
def queue_view(request, alias: str):
    spec = _spec(alias)
    state = request.GET.get("state") or records.WAITING
    if state not in records.STATES:
        state = records.WAITING
    try:
        page_number = int(request.GET.get("page") or 1)
    except ValueError:
        page_number = 1
    search = request.GET.get("q", "")
    page = queue_jobs(spec, state, page=page_number, per_page=PER_PAGE, search=search)
    return TemplateResponse(
        request,
        "admin/queues/queue.html",
        _context(
            request,
            f"Queue {spec.name}",
            spec=spec,
            stats=queue_stats(spec),
            workers=workers_alive(spec.name),
            state=state,
            states=records.STATES,
            page=page,
            search=search,
            chart=throughput_chart(spec.name),
            quarantined=(
                webhook_events_quarantined() if spec.name == WEBHOOK.name else None
            ),
        ),
    )


@operators_only
@require_POST
def webhook_event_release_view(request, event_id: int):
    return webhook_event_release_post(request, event_id)


@viewers_only
def job_view(request, job_id: str):
    job = job_detail(job_id)
    if job is None:
        raise Http404("No such job (it may have been cleaned).")
    return TemplateResponse(
        request,
        "admin/queues/job.html",
        _context(
            request,
            f"Job {job_id}",
            job=job_for_display(job),
            spec=_spec_or_none(job.get("queue") or ""),
            data=job_data_for_display(job),
            # Operators correct the data as it is (only they can retry it).
            editable_data=(
                job.get("kwargs") or "{}"
                if job.get("state") == records.FAILED
                and user_can_operate_queues(request.user)
                else None
            ),
        ),
    )


def _back(request, fallback: str):
    target = request.POST.get("next") or fallback
    if not url_has_allowed_host_and_scheme(
        target, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        target = fallback
    return HttpResponseRedirect(target)


@require_POST
@operators_only
def pause_view(request, alias: str):
    spec = _spec(alias)
    if request.POST.get("action") == "resume":
        services.queue_resume(spec=spec, actor=request.user)
        messages.success(request, f"{spec.name} resumed.")
    else:
        services.queue_pause(spec=spec, actor=request.user)
        messages.success(
            request, f"{spec.name} paused: workers take no new job from it."
        )
    return _back(request, reverse("admin:queues-queue", args=[spec.alias]))


def _clean_params(request) -> tuple[int, str] | None:
    source = request.POST if request.method == "POST" else request.GET
    try:
        grace_ms = int(float(source.get("grace_minutes", "60")) * 60_000)
    except ValueError:
        return None
    status = source.get("status", records.COMPLETED)
    if grace_ms < 0 or status not in services.CLEANABLE_STATES:
        return None
    return grace_ms, status


@operators_only
def clean_view(request, alias: str):
    spec = _spec(alias)
    back = reverse("admin:queues-queue", args=[spec.alias])
    params = _clean_params(request)
    if params is None:
        messages.error(
            request, "Clean needs a grace of 0 minutes or more and a finished state."
        )
        return HttpResponseRedirect(back)
    grace_ms, status = params
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        removed = services.queue_clean(
            spec=spec, grace_ms=grace_ms, status=status, actor=request.user
        )
        messages.success(request, f"Removed {removed} {status} jobs from {spec.name}.")
        return HttpResponseRedirect(back)
    count = services.queue_clean_count(spec=spec, grace_ms=grace_ms, status=status)
    return TemplateResponse(
        request,
        "admin/queues/confirm.html",
        _context(
            request,
            f"Clean {spec.name}",
            spec=spec,
            count=count,
            question=(
                f"Remove {count} {status} jobs finished more than "
                f"{grace_ms // 60_000} minutes ago from {spec.name}?"
            ),
            hidden={"grace_minutes": grace_ms / 60_000, "status": status},
            action_url=reverse("admin:queues-clean", args=[spec.alias]),
            back=back,
        ),
    )


@operators_only
def retry_failed_view(request, alias: str):
    spec = _spec(alias)
    back = reverse("admin:queues-queue", args=[spec.alias]) + "?state=failed"
    if request.method == "POST" and request.POST.get("confirm") == "yes":
        retried = services.queue_retry_failed(spec=spec, actor=request.user)
        messages.success(request, f"Retrying {retried} failed jobs of {spec.name}.")
        return HttpResponseRedirect(back)
    count = services.queue_retry_failed_count(spec=spec)
    return TemplateResponse(
        request,
        "admin/queues/confirm.html",
        _context(
            request,
            f"Retry failed jobs of {spec.name}",
            spec=spec,
            count=count,
            question=f"Retry all {count} failed jobs of {spec.name}?",
            hidden={},
            action_url=reverse("admin:queues-retry-failed", args=[spec.alias]),
            back=back,
        ),
    )


@require_POST
@operators_only
def job_action_view(request, job_id: str):
    job = job_detail(job_id)
    if job is None:
        raise Http404("No such job.")
    fallback = reverse("admin:queues-job", args=[job_id])
    try:
        if request.POST.get("action") == "remove":
            services.job_remove(job_id=job_id, actor=request.user)
            messages.success(request, f"Job {job_id} removed.")
            spec = _spec_or_none(job.get("queue") or "")
            if spec is None:
                return HttpResponseRedirect(reverse("admin:queues-overview"))
            return HttpResponseRedirect(
                reverse("admin:queues-queue", args=[spec.alias])
            )
        if request.POST.get("action") == "edit_retry":
            return _edit_retry(request, job, fallback)
        services.job_retry(job_id=job_id, actor=request.user)
        messages.success(request, f"Job {job_id} sent again.")
    except services.JobActionRefused as exc:
        messages.error(request, str(exc))
    return _back(request, fallback)


def _edit_retry(request, job: dict, fallback: str):
    try:
        data = json.loads(request.POST.get("data") or "")
    except json.JSONDecodeError as exc:
        messages.error(request, f"The corrected data is not JSON: {exc}.")
        return HttpResponseRedirect(fallback)
    errors = edited_job_errors(job.get("task") or "", data)
    if errors:
        messages.error(request, f"Not retried: {json.dumps(errors)}")
        return HttpResponseRedirect(fallback)
    services.job_retry_edited(job_id=job["id"], kwargs=data, actor=request.user)
    messages.success(request, f"Job {job['id']} sent again with the corrected data.")
    return HttpResponseRedirect(fallback)


@require_POST
@operators_only
def test_job_view(request, alias: str):
    return test_job_post(request, _spec(alias))


@operators_only
def redrive_view(request, alias: str):
    return redrive_page(request, _spec(alias), _context)


def queue_admin_urls(site: admin.AdminSite | None = None) -> list:
    """URLs of the page, mounted inside the admin site (its login and look)."""
    view = (site or admin.site).admin_view
    root = queue_page_prefix(settings.QUEUE_DASHBOARD_PATH) or "queues/"
    return [
        path(root, view(overview_view), name="queues-overview"),
        path(f"{root}jobs/<str:job_id>/", view(job_view), name="queues-job"),
        path(
            f"{root}jobs/<str:job_id>/action/",
            view(job_action_view),
            name="queues-job-action",
        ),
        path(
            f"{root}webhook-events/<int:event_id>/release/",
            view(webhook_event_release_view),
            name="queues-webhook-event-release",
        ),
        path(f"{root}<str:alias>/", view(queue_view), name="queues-queue"),
        path(f"{root}<str:alias>/pause/", view(pause_view), name="queues-pause"),
        path(f"{root}<str:alias>/clean/", view(clean_view), name="queues-clean"),
        path(f"{root}<str:alias>/redrive/", view(redrive_view), name="queues-redrive"),
        path(f"{root}<str:alias>/test/", view(test_job_view), name="queues-test"),
        path(
            f"{root}<str:alias>/retry-failed/",
            view(retry_failed_view),
            name="queues-retry-failed",
        ),
    ]
