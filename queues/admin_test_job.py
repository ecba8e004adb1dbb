"""The queue page's test job: the queue's real work with the seed's data
shapes, or the no-op job with "dry run" (as POST /admin/queue/test)."""

import json

from django.contrib import messages
from django.core.exceptions import ValidationError
from django.http import HttpResponseRedirect
from django.urls import reverse

from queues.api.serializers import test_job_errors
from queues.facade import queue_test_job_run
from queues.services import queue_test_job_enqueue


def test_job_post(request, spec):
    back = reverse("admin:queues-queue", args=[spec.alias])
    try:
        data = json.loads(request.POST.get("data") or "{}")
    except json.JSONDecodeError as exc:
        messages.error(request, f"Test job: the data is not JSON: {exc}.")
        return HttpResponseRedirect(back)
    if request.POST.get("dry_run"):
        job_id = queue_test_job_enqueue(spec=spec, data=data, actor=request.user)
        messages.success(request, f"No-op test job {job_id} sent to {spec.name}.")
        return HttpResponseRedirect(back)
    errors = test_job_errors(spec.name, data)
    if errors is None:
        try:
            answer = queue_test_job_run(spec=spec, data=data, actor=request.user)
        except ValidationError as exc:
            errors = {"data": exc.message_dict}
    if errors:
        messages.error(request, f"Test job not sent: {json.dumps(errors)}")
        return HttpResponseRedirect(back)
    follow = answer.get("jobId") or f"inbox event {answer.get('eventId')}"
    messages.success(request, f"Test job sent to {spec.name}: {follow}.")
    return HttpResponseRedirect(back)
