"""Input of the queue admin API; the test job's data is validated per queue."""

from rest_framework import serializers

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
    data = serializers.DictField()


class WebhookTestData(serializers.Serializer):
    salonId = serializers.CharField(required=False)  # noqa: N815
    payload = serializers.DictField()


class MessageStatusTestData(serializers.Serializer):
    messageId = serializers.CharField()  # noqa: N815
    status = serializers.ChoiceField(["sent", "delivered", "read", "failed"])


class ReminderTestData(serializers.Serializer):
    bookingId = serializers.CharField()  # noqa: N815
    reminderType = serializers.ChoiceField(  # noqa: N815
        ["day_before", "hour_before"], required=False
    )


class EmailTestData(serializers.Serializer):
    to = serializers.EmailField()
    subject = serializers.CharField(max_length=200)
    template = serializers.CharField(max_length=100)
    data = serializers.DictField(required=False)


class OutboundTestData(serializers.Serializer):
    to = serializers.RegexField(E164, error_messages={"invalid": "Use E.164."})
    text = serializers.CharField(max_length=4096)


class MediaTestData(serializers.Serializer):
    messageId = serializers.CharField()  # noqa: N815
    mediaId = serializers.RegexField(r"^\d{1,32}$", required=False)  # noqa: N815


TEST_DATA_SERIALIZERS = {
    WEBHOOK.name: WebhookTestData,
    MESSAGE_STATUS.name: MessageStatusTestData,
    REMINDER.name: ReminderTestData,
    EMAIL.name: EmailTestData,
    OUTBOUND.name: OutboundTestData,
    MEDIA.name: MediaTestData,
}


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
