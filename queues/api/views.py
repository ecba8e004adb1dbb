"""The queue admin API (JWT, staff only): /admin/queue/..."""

from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema
from rest_framework import permissions, status
from rest_framework.exceptions import ValidationError
from rest_framework.response import Response
from rest_framework.views import APIView

from queues import redrive, services
from queues.api.serializers import (
    CleanParamsSerializer,
    CleanResultSerializer,
    JobAcceptedSerializer,
    QueueStatsSerializer,
    RedriveRequestSerializer,
    RetryFailedResultSerializer,
    TestRequestSerializer,
    edited_job_errors,
    test_job_errors,
)
from queues.definitions import QueueSpec, UnknownQueue, queue_spec
from queues.facade import queue_test_job_run
from queues.health import health_report
from queues.redrive import RedriveFilter
from queues.roles import user_can_operate_queues, user_can_view_queues
from queues.selectors import (
    job_data_for_display,
    job_detail,
    job_for_display,
    queue_stats,
)


def spec_or_404(name: str) -> QueueSpec:
    try:
        return queue_spec(name)
    except UnknownQueue:
        raise Http404(f"No queue named {name!r}.") from None


class CanViewQueues(permissions.BasePermission):
    def has_permission(self, request, view) -> bool:
        return user_can_view_queues(request.user)


class CanOperateQueues(permissions.BasePermission):
    """Reads need the viewing permission, everything else the operating one."""

    def has_permission(self, request, view) -> bool:
        if request.method in permissions.SAFE_METHODS:
            return user_can_view_queues(request.user)
        return user_can_operate_queues(request.user)


class QueueAdminView(APIView):
    permission_classes = [permissions.IsAuthenticated, CanOperateQueues]


class QueueStatsView(QueueAdminView):
    @extend_schema(responses=QueueStatsSerializer)
    def get(self, request, queue: str):
        return Response(queue_stats(spec_or_404(queue)))


class QueuePauseView(QueueAdminView):
    @extend_schema(request=None, responses=QueueStatsSerializer)
    def post(self, request, queue: str):
        return Response(
            services.queue_pause(spec=spec_or_404(queue), actor=request.user)
        )


class QueueResumeView(QueueAdminView):
    @extend_schema(request=None, responses=QueueStatsSerializer)
    def post(self, request, queue: str):
        return Response(
            services.queue_resume(spec=spec_or_404(queue), actor=request.user)
        )


class QueueCleanView(QueueAdminView):
    @extend_schema(
        request=None,
        parameters=[CleanParamsSerializer],
        responses=CleanResultSerializer,
    )
    def post(self, request, queue: str):
        spec = spec_or_404(queue)
        params = CleanParamsSerializer(data=request.query_params)
        params.is_valid(raise_exception=True)
        removed = services.queue_clean(
            spec=spec,
            grace_ms=params.validated_data["grace"],
            status=params.validated_data["status"],
            actor=request.user,
        )
        return Response(
            {"queue": spec.name, **params.validated_data, "removed": removed}
        )


class QueueRetryFailedView(QueueAdminView):
    @extend_schema(request=None, responses=RetryFailedResultSerializer)
    def post(self, request, queue: str):
        spec = spec_or_404(queue)
        retried = services.queue_retry_failed(spec=spec, actor=request.user)
        return Response({"queue": spec.name, "retried": retried})


class QueueRedriveView(QueueAdminView):
    @extend_schema(
        request=RedriveRequestSerializer,
        responses={200: OpenApiTypes.OBJECT, 202: OpenApiTypes.OBJECT},
    )
    def post(self, request, queue: str):
        """Re-drive the failed (or completed) jobs matching a filter; with
        ``dryRun`` only say how many match."""
        spec = spec_or_404(queue)
        body = RedriveRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        params = dict(body.validated_data)
        dry_run, rate = params.pop("dryRun"), params.pop("rate", None)
        where = RedriveFilter(**params)
        answer = {"queue": spec.name, "filter": where.as_params()}
        if dry_run:
            count = len(redrive.redrive_matches(spec=spec, where=where))
            return Response({**answer, "matched": count, "dryRun": True})
        action, ids = redrive.queue_redrive_enqueue(
            spec=spec, where=where, actor=request.user, rate=rate
        )
        return Response(
            {
                **answer,
                "matched": len(ids),
                "rate": action.params["rate"],
                "actionId": action.pk,
            },
            status=status.HTTP_202_ACCEPTED,
        )


class QueueHealthView(QueueAdminView):
    @extend_schema(responses={200: OpenApiTypes.OBJECT, 503: OpenApiTypes.OBJECT})
    def get(self, request):
        code, body = health_report()
        return Response(body, status=code)


class QueueTestJobView(QueueAdminView):
    @extend_schema(
        request=TestRequestSerializer, responses={202: JobAcceptedSerializer}
    )
    def post(self, request):
        body = TestRequestSerializer(data=request.data)
        body.is_valid(raise_exception=True)
        spec = spec_or_404(body.validated_data["queueName"])
        if body.validated_data["dryRun"]:
            # The machinery alone: a no-op job on the queue.
            job_id = services.queue_test_job_enqueue(
                spec=spec, data=body.validated_data["data"], actor=request.user
            )
            answer = {"jobId": job_id, "queue": spec.name, "dryRun": True}
            return Response(answer, status=status.HTTP_202_ACCEPTED)
        errors = test_job_errors(spec.name, body.validated_data["data"])
        if errors:
            raise ValidationError(errors)
        try:
            answer = queue_test_job_run(
                spec=spec, data=body.validated_data["data"], actor=request.user
            )
        except DjangoValidationError as exc:
            raise ValidationError({"data": exc.message_dict}) from None
        return Response(answer, status=status.HTTP_202_ACCEPTED)


def job_or_404(job_id: str) -> dict:
    job = job_detail(job_id)
    if job is None:
        raise Http404(f"No job {job_id!r}.")
    return job


def job_view(job: dict) -> dict:
    """A job as the API shows it: data masked, like the page."""
    hidden = {"args", "kwargs"}
    return {
        **{k: v for k, v in job_for_display(job).items() if k not in hidden},
        "data": job_data_for_display(job),
    }


class JobView(QueueAdminView):
    @extend_schema(responses=OpenApiTypes.OBJECT)
    def get(self, request, job_id: str):
        return Response(job_view(job_or_404(job_id)))

    @extend_schema(responses={204: None, 409: OpenApiTypes.OBJECT})
    def delete(self, request, job_id: str):
        job_or_404(job_id)
        try:
            services.job_remove(job_id=job_id, actor=request.user)
        except services.JobActionRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response(status=status.HTTP_204_NO_CONTENT)


class JobRetryView(QueueAdminView):
    @extend_schema(
        request=OpenApiTypes.OBJECT,
        responses={202: JobAcceptedSerializer, 409: OpenApiTypes.OBJECT},
    )
    def post(self, request, job_id: str):
        """Retry a failed job; with ``{"data": {...}}``, with corrected data
        (its keyword arguments, validated per task)."""
        job = job_or_404(job_id)
        edited = isinstance(request.data, dict) and "data" in request.data
        try:
            if edited:
                errors = edited_job_errors(job.get("task") or "", request.data["data"])
                if errors:
                    raise ValidationError(errors)
                services.job_retry_edited(
                    job_id=job_id, kwargs=request.data["data"], actor=request.user
                )
            else:
                services.job_retry(job_id=job_id, actor=request.user)
        except services.JobActionRefused as exc:
            return Response({"detail": str(exc)}, status=status.HTTP_409_CONFLICT)
        return Response({"jobId": job_id}, status=status.HTTP_202_ACCEPTED)
