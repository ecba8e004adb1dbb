"""The queue page, at QUEUE_DASHBOARD_PATH (/admin/queues/), inside Django admin
(staff only), mounted by the project's AdminSite (saas/admin_site.py).

Plain HTML forms do everything (pause, resume, clean, retry, remove), so the
page works without JavaScript; a small script refreshes the live parts every
few seconds without reloading. Bulk actions go through a confirmation page
that says how many jobs they will touch.
"""

from django.conf import settings
from django.contrib import admin, messages
from django.http import Http404, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_POST

from messaging.pacing import pacing_overview
from queues import records, services
from queues.definitions import (
    QUEUES,
    QueueSpec,
    UnknownQueue,
    queue_page_prefix,
    queue_spec,
)
from queues.models import QueueAction
from queues.selectors import (
    job_data_for_display,
    job_detail,
    job_for_display,
    queue_jobs,
    queue_stats,
    queue_throughput,
    queues_stats,
    workers_alive,
)

REFRESH_SECONDS = 5
PER_PAGE = 25
CHART_HEIGHT = 40


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


def _context(request, title: str, **extra) -> dict:
    return {
        **admin.site.each_context(request),
        "title": title,
        "refresh_seconds": REFRESH_SECONDS,
        "flower_url": settings.FLOWER_URL,
        **extra,
    }


def _chart(queue: str) -> dict:
    series = queue_throughput(queue)
    peak = max((p["completed"] + p["failed"] for p in series), default=0) or 1
    bars = []
    for i, point in enumerate(series):
        done = round(point["completed"] * CHART_HEIGHT / peak, 1)
        failed = round(point["failed"] * CHART_HEIGHT / peak, 1)
        bars.append(
            {
                "x": i * 4,
                "completed_h": done,
                "completed_y": CHART_HEIGHT - done,
                "failed_h": failed,
                "failed_y": CHART_HEIGHT - done - failed,
                **point,
            }
        )
    return {
        "bars": bars,
        "completed": sum(p["completed"] for p in series),
        "failed": sum(p["failed"] for p in series),
        "height": CHART_HEIGHT,
        "width": len(series) * 4,
    }


def overview_view(request):
    rows = []
    for spec, stats in zip(QUEUES, queues_stats(), strict=True):
        rows.append(
            {
                "spec": spec,
                "stats": stats,
                "workers": workers_alive(spec.name),
                "chart": _chart(spec.name),
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
            chart=_chart(spec.name),
        ),
    )


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
        services.job_retry(job_id=job_id, actor=request.user)
        messages.success(request, f"Job {job_id} sent again.")
    except services.JobActionRefused as exc:
        messages.error(request, str(exc))
    return _back(request, fallback)


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
        path(f"{root}<str:alias>/", view(queue_view), name="queues-queue"),
        path(f"{root}<str:alias>/pause/", view(pause_view), name="queues-pause"),
        path(f"{root}<str:alias>/clean/", view(clean_view), name="queues-clean"),
        path(
            f"{root}<str:alias>/retry-failed/",
            view(retry_failed_view),
            name="queues-retry-failed",
        ),
    ]
