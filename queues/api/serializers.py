"""Input of the queue admin API; the test job's data is validated per queue."""

import inspect

from celery import current_app
from rest_framework import serializers

from bookings.models import Salon
from bookings.reminder_sending import REMINDER_TEST_SEND_TASK
from messaging.models import Message
from messaging.outbound import MESSAGE_TEST_SEND_TASK
from notifications.services import EMAIL_SEND_TASK, EmailJobError, email_check
from queues.definitions import (
    EMAIL,
    MEDIA,
    MESSAGE_STATUS,
    OUTBOUND,
    REMINDER,
    WEBHOOK,
)

E164 = r"^\+[1-9]\d{6,14}$"


class TestRequestSerializer(serializers.Serializer):
    queueName = serializers.CharField()  # noqa: N815 (the seed's field name)
    data = serializers.DictField(required=False, default=dict)
    dryRun = serializers.BooleanField(default=False)  # noqa: N815


class WebhookTestData(serializers.Serializer):
    salonId = serializers.CharField(required=False)  # noqa: N815
    payload = serializers.DictField()


class MessageStatusTestData(serializers.Serializer):
    messageId = serializers.CharField()  # noqa: N815
    status = serializers.ChoiceField(["sent", "delivered", "read", "failed"])


def _salon_exists(value):
    if not Salon.objects.filter(pk=value).exists():
        raise serializers.ValidationError("No salon with this id.")
    return value


class ReminderTestData(serializers.Serializer):
    """The reminder template to ``to`` from the salon's number."""

    salonId = serializers.UUIDField(validators=[_salon_exists])  # noqa: N815
    to = serializers.RegexField(E164, error_messages={"invalid": "Use E.164."})
    parameters = serializers.ListField(
        child=serializers.CharField(max_length=200), required=False, max_length=10
    )


class EmailTestData(serializers.Serializer):
    to = serializers.EmailField()
    subject = serializers.CharField(max_length=200)
    template = serializers.CharField(max_length=100)
    data = serializers.DictField(required=False)
    priority = serializers.IntegerField(required=False, min_value=1, max_value=10)


class OutboundTestData(serializers.Serializer):
    salonId = serializers.UUIDField(validators=[_salon_exists])  # noqa: N815
    to = serializers.RegexField(E164, error_messages={"invalid": "Use E.164."})
    text = serializers.CharField(max_length=4096)


def _media_message_exists(value):
    if not Message.objects.filter(pk=value).exclude(media_status="").exists():
        raise serializers.ValidationError("No message with media has this id.")
    return value


class MediaTestData(serializers.Serializer):
    messageId = serializers.UUIDField(validators=[_media_message_exists])  # noqa: N815
    mediaId = serializers.RegexField(r"^\d{1,32}$", required=False)  # noqa: N815


TEST_DATA_SERIALIZERS = {
    WEBHOOK.name: WebhookTestData,
    MESSAGE_STATUS.name: MessageStatusTestData,
    REMINDER.name: ReminderTestData,
    EMAIL.name: EmailTestData,
    OUTBOUND.name: OutboundTestData,
    MEDIA.name: MediaTestData,
}


class EmailJobData(serializers.Serializer):
    """notifications.email_send's keyword arguments."""

    data = serializers.DictField()
    log_id = serializers.CharField(required=False, allow_null=True)

    def validate_data(self, value):
        shape = EmailTestData(data=value)
        if not shape.is_valid():
            raise serializers.ValidationError(shape.errors)
        try:
            email_check(
                to=value.get("to"),
                template=value.get("template"),
                data=value.get("data") or {},
            )
        except EmailJobError as exc:
            raise serializers.ValidationError({exc.field: [str(exc)]}) from None
        return value


class SnakeTestSend(serializers.Serializer):
    salon_id = serializers.UUIDField(validators=[_salon_exists])
    to = serializers.RegexField(E164, error_messages={"invalid": "Use E.164."})


class OutboundTestSendData(SnakeTestSend):
    text = serializers.CharField(max_length=4096)


class ReminderTestSendData(SnakeTestSend):
    parameters = serializers.ListField(
        child=serializers.CharField(max_length=200), max_length=10
    )


class NoopTestJobData(serializers.Serializer):
    data = serializers.JSONField()


#: Per task, the shape of a failed job's corrected keyword arguments; any other
#: task's are checked against its signature.
EDITED_JOB_SERIALIZERS = {
    EMAIL_SEND_TASK: EmailJobData,
    MESSAGE_TEST_SEND_TASK: OutboundTestSendData,
    REMINDER_TEST_SEND_TASK: ReminderTestSendData,
    "queues.test_job": NoopTestJobData,
}


def edited_job_errors(task_name: str, data) -> dict | None:
    """Field errors of a failed job's corrected data (its keyword arguments),
    or None when it can be retried with it."""
    if not isinstance(data, dict):
        return {"data": ["Expected the job's keyword arguments, an object."]}
    serializer = EDITED_JOB_SERIALIZERS.get(task_name)
    if serializer is not None:
        checked = serializer(data=data)
        return None if checked.is_valid() else {"data": checked.errors}
    task = current_app.tasks.get(task_name)
    if task is None:
        return {"data": [f"No task {task_name!r} in this deployment."]}
    try:
        inspect.signature(task.run).bind(**data)
    except TypeError as exc:
        return {"data": [f"Does not fit {task_name}: {exc}."]}
    return None


class RedriveRequestSerializer(serializers.Serializer):
    state = serializers.ChoiceField(["failed", "completed"], default="failed")
    task = serializers.CharField(required=False, default="", allow_blank=True)
    since = serializers.DateTimeField(required=False, allow_null=True, default=None)
    until = serializers.DateTimeField(required=False, allow_null=True, default=None)
    error = serializers.CharField(required=False, default="", allow_blank=True)
    text = serializers.CharField(required=False, default="", allow_blank=True)
    rate = serializers.FloatField(required=False, allow_null=True, min_value=0.01)
    dryRun = serializers.BooleanField(default=False)  # noqa: N815

    def validate(self, attrs):
        since, until = attrs.get("since"), attrs.get("until")
        if since and until and since > until:
            raise serializers.ValidationError({"until": "Must be after since."})
        return attrs


def test_job_errors(queue: str, data) -> dict | None:
    """Field errors of a test job's data for ``queue`` (the seed's shapes)."""
    serializer = TEST_DATA_SERIALIZERS.get(queue)
    if serializer is None:
        return {"queueName": [f"No test job for {queue}."]}
    checked = serializer(data=data)
    return None if checked.is_valid() else {"data": checked.errors}


class CleanParamsSerializer(serializers.Serializer):
    grace = serializers.IntegerField(min_value=0)
    status = serializers.ChoiceField(["completed", "failed"])


# --- answers, for the OpenAPI schema ------------------------------------------
class QueueStatsSerializer(serializers.Serializer):
    queue = serializers.CharField()
    waiting = serializers.IntegerField()
    active = serializers.IntegerField()
    delayed = serializers.IntegerField()
    completed = serializers.IntegerField()
    failed = serializers.IntegerField()
    paused = serializers.BooleanField()


class CleanResultSerializer(serializers.Serializer):
    queue = serializers.CharField()
    grace = serializers.IntegerField()
    status = serializers.CharField()
    removed = serializers.IntegerField()


class RetryFailedResultSerializer(serializers.Serializer):
    queue = serializers.CharField()
    retried = serializers.IntegerField()


class JobAcceptedSerializer(serializers.Serializer):
    jobId = serializers.CharField()  # noqa: N815 (the seed's name)
    queue = serializers.CharField(required=False)
