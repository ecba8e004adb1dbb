"""The dashboard and salon caches: raw keys, TTLs, and no stale read after any
write commits, for every viewer of the affected dashboards."""

import threading
from datetime import datetime, timedelta

import pytest
from django.db import connection, transaction
from django.utils import timezone

from bookings import services
from bookings.cache import (
    dashboard_cache_get,
    dashboard_cache_set,
    dashboard_key,
    dashboard_stats_cached,
    dashboard_version_key,
)
from bookings.models import Booking, BookingReminder
from bookings.salon_cache import (
    salon_cache_get,
    salon_cache_invalidate,
    salon_cache_set,
    salon_cached,
)
from bookings.selectors import dashboard_snapshot, dashboard_stats
from bookings.signals import bookings_changed
from messaging import services as messaging_services
from messaging.cache import (
    conversation_cache_get,
    conversation_cached,
    template_cache_get,
    template_cached,
)
from messaging.models import Message
from messaging.signals import messages_changed
from saas.cache import cache_service, cache_stats
from saas.redis import cache_redis
from tests.conftest import client_for
from tests.factories import (
    BookingFactory,
    ConversationFactory,
    MessageFactory,
    SalonFactory,
    TemplateFactory,
    UserFactory,
)

pytestmark = pytest.mark.django_db(transaction=True)
URL = "/api/dashboard/stats/"


def without_time(stats: dict) -> dict:
    return {k: v for k, v in stats.items() if k != "generated_at"}


@pytest.fixture
def world(user, staff_user, other_user):
    salon = SalonFactory(owner=user)
    sister = SalonFactory(owner=user)
    BookingFactory(salon=salon)
    BookingFactory(salon=sister)
    message = MessageFactory(conversation__salon=salon)
    theirs = SalonFactory(owner=other_user)
    BookingFactory(salon=theirs)
    return {
        "salon": salon,
        "sister": sister,
        "conversation": message.conversation,
        "message": message,
        "theirs": theirs,
        "owner": client_for(user),
        "staff": client_for(staff_user),
        "other": client_for(other_user),
    }


def viewers(world):
    """Every (client, user, salon filter) whose dashboard includes world's salon."""
    salon = str(world["salon"].pk)
    return [
        ("owner", {"salon": salon}),
        ("owner", {}),
        ("staff", {"salon": salon}),
        ("staff", {}),
    ]


def read(world, who, params):
    response = world[who].get(URL, params)
    assert response.status_code == 200, response.content
    return response


def prime(world):
    """Read every dashboard twice: the second read of each must be a hit."""
    answers = {}
    for who, params in [*viewers(world), ("other", {})]:
        read(world, who, params)
        response = read(world, who, params)
        assert response["X-Cache"] == "hit", (who, params)
        answers[(who, tuple(params.items()))] = without_time(response.json())
    return answers


def assert_fresh_everywhere(world, before, user, staff_user, *, served="miss"):
    """Every affected dashboard answers what a recompute answers: recomputed
    (``served="miss"``), or patched in place (``"hit"``), then exactly what the
    selector gives at the value's own generated_at."""
    users = {"owner": user, "staff": staff_user}
    changed = False
    for who, params in viewers(world):
        response = read(world, who, params)
        salon_id = params.get("salon")
        expected = without_time(dashboard_stats(user=users[who], salon_id=salon_id))
        assert without_time(response.json()) == expected, (who, params)
        assert response["X-Cache"] == served, (who, params)
        if served == "hit":
            at = datetime.fromisoformat(response.json()["generated_at"])
            recomputed = dashboard_snapshot(user=users[who], salon_id=salon_id, now=at)
            assert response.json() == recomputed.stats, (who, params)
        changed |= expected != before[(who, tuple(params.items()))]
        # and cached again afterwards
        assert read(world, who, params)["X-Cache"] == "hit"
    assert changed, "the event changed no number: the test proves nothing"
    # A dashboard that does not include the salon was not invalidated.
    assert read(world, "other", {})["X-Cache"] == "hit"


def closing_connections(target, *args):
    """A thread's target that closes the thread's database connection at the end."""

    def run():
        try:
            target(*args)
        finally:
            connection.close()

    return run


def future(days=5):
    return timezone.now() + timedelta(days=days)


def booking_created(world):
    services.booking_create(
        salon=world["salon"],
        customer_name="Ana",
        customer_phone="+34600111222",
        service_name="Colour",
        start_at=future(),
    )


def booking_created_over_http(world):
    response = world["owner"].post(
        "/api/bookings/",
        {
            "salon": str(world["salon"].pk),
            "customer_name": "Ana",
            "customer_phone": "+34600111222",
            "service_name": "Colour",
            "start_at": future().isoformat(),
        },
        format="json",
    )
    assert response.status_code == 201, response.content


def booking_changed(world):
    booking = Booking.objects.filter(salon=world["salon"]).get()
    services.booking_update(booking=booking, data={"status": "confirmed"})


def booking_cancelled(world):
    booking = Booking.objects.filter(salon=world["salon"]).get()
    services.booking_cancel(booking=booking)


def booking_deleted(world):
    services.booking_delete(booking=Booking.objects.filter(salon=world["salon"]).get())


def bookings_bulk_update(world):
    """A reminder-style write (no post_save) and the after-commit signal."""
    salon_id = world["salon"].pk
    booking = Booking.objects.filter(salon_id=salon_id).get()
    now = timezone.now()
    with transaction.atomic():
        BookingReminder.objects.update_or_create(
            booking=booking,
            kind=BookingReminder.Kind.DAY_BEFORE,
            defaults={
                "due_at": now,
                "send_by": now,
                "booking_start_at": booking.start_at,
                "status": BookingReminder.Status.SENT,
                "sent_at": now,
            },
        )
        transaction.on_commit(lambda: bookings_changed.send(None, salon_id=salon_id))


def message_received(world):
    MessageFactory(conversation=world["conversation"])


def message_sent(world):
    MessageFactory(
        conversation=world["conversation"],
        direction=Message.Direction.OUTBOUND,
        status=Message.Status.SENT,
    )


def message_status_changed(world):
    message = world["message"]
    message.direction = Message.Direction.OUTBOUND
    message.status = Message.Status.FAILED
    message.save()


def messages_bulk_update(world):
    conversation = world["conversation"]
    with transaction.atomic():
        Message.objects.filter(conversation=conversation).update(status="failed")
        transaction.on_commit(
            lambda: messages_changed.send(
                None, salon_id=conversation.salon_id, conversation_ids=[conversation.pk]
            )
        )


def conversation_started(world):
    ConversationFactory(
        salon=world["salon"], customer_wa_id="34600999888", customer_name="Nuevo"
    )


#: Booking writes through the services: the cached dashboards are patched.
PATCHING_EVENTS = [
    booking_created,
    booking_created_over_http,
    booking_changed,
    booking_cancelled,
]
#: Every other write invalidates them.
EVENTS = [
    booking_deleted,
    bookings_bulk_update,
    message_received,
    message_sent,
    message_status_changed,
    messages_bulk_update,
    conversation_started,
]


@pytest.mark.parametrize("event", EVENTS, ids=lambda e: e.__name__)
def test_no_stale_dashboard_after_a_write_commits(world, event, user, staff_user):
    before = prime(world)
    event(world)
    assert_fresh_everywhere(world, before, user, staff_user)


@pytest.mark.parametrize("event", PATCHING_EVENTS, ids=lambda e: e.__name__)
def test_booking_write_patches_every_dashboard_in_place(world, event, user, staff_user):
    before = prime(world)
    event(world)
    assert_fresh_everywhere(world, before, user, staff_user, served="hit")


def test_salon_edit_invalidates_its_dashboards_and_its_key(world, user, staff_user):
    salon = world["salon"]
    # 12 h from now is today in UTC exactly when it is not in UTC+12.
    BookingFactory(salon=salon, start_at=timezone.now() + timedelta(hours=12))
    services.salon_update(salon=salon, data={"timezone": "UTC"})
    assert salon_cached(salon.pk)["timezone"] == "UTC"
    before = prime(world)
    services.salon_update(salon=salon, data={"timezone": "Etc/GMT-12", "name": "New"})
    assert salon_cache_get(salon.pk) is None
    assert salon_cached(salon.pk)["name"] == "New"
    assert_fresh_everywhere(world, before, user, staff_user)


def test_rolled_back_write_invalidates_nothing_and_leaves_nothing_stale(world):
    raw = cache_redis()
    prime(world)
    version_keys = [
        f"dashboard:version:salon:{world['salon'].pk}",
        "dashboard:version:all",
    ]
    versions = raw.mget(version_keys)
    with pytest.raises(RuntimeError), transaction.atomic():
        booking_created(world)
        message_received(world)
        raise RuntimeError("rolled back")
    assert raw.mget(version_keys) == versions
    for who, params in viewers(world):
        response = read(world, who, params)
        assert response["X-Cache"] == "hit"
    user_stats = dashboard_stats(user=world["salon"].owner, salon_id=world["salon"].pk)
    assert (
        read(world, "owner", {"salon": str(world["salon"].pk)}).json()["bookings_total"]
        == user_stats["bookings_total"]
    )


def test_reader_computing_while_a_write_commits_does_not_leave_a_stale_value(
    world, user
):
    """The reader reads the database before the write commits and stores its
    value after the invalidation: that value must not be served."""
    salon = world["salon"]
    key = dashboard_key(user.pk, salon.pk)

    def compute_while_a_write_commits():
        stats = {
            "scope": "owner",
            "stats": dashboard_stats(user=user, salon_id=salon.pk),
        }
        writer = threading.Thread(target=closing_connections(booking_created, world))
        writer.start()
        writer.join()
        return stats

    stale = cache_service.get_or_set(
        key,
        compute_while_a_write_commits,
        60,
        version_key=dashboard_version_key(user, salon.pk),
    )
    response = read(world, "owner", {"salon": str(salon.pk)})
    assert response.json()["bookings_total"] == stale["stats"]["bookings_total"] + 1


def test_reader_during_an_open_write_transaction_then_fresh_after_commit(world, user):
    salon = world["salon"]
    params = {"salon": str(salon.pk)}
    written, commit = threading.Event(), threading.Event()

    def writer():
        with transaction.atomic():
            booking_created(world)
            written.set()
            commit.wait(30)

    thread = threading.Thread(target=closing_connections(writer))
    thread.start()
    try:
        assert written.wait(30)
        during = read(world, "owner", params).json()["bookings_total"]
        assert read(world, "owner", params)["X-Cache"] == "hit"
    finally:
        commit.set()
        thread.join(30)
    after = read(world, "owner", params)
    assert after.json()["bookings_total"] == during + 1
    assert after["X-Cache"] == "hit"  # patched in place


def test_demoted_staff_no_longer_sees_another_salon_from_cache(world, staff_user):
    params = {"salon": str(world["theirs"].pk)}
    read(world, "staff", params)
    assert read(world, "staff", params)["X-Cache"] == "hit"
    staff_user.is_staff = False
    staff_user.save()
    assert world["staff"].get(URL, params).status_code == 404


# --- keys, TTLs, values -------------------------------------------------------
def test_dashboard_key_holds_the_stats_under_the_documented_name(world, user):
    raw = cache_redis()
    salon = world["salon"]
    read(world, "owner", {"salon": str(salon.pk)})
    read(world, "owner", {})
    key = f"dashboard:stats:{user.pk}:{salon.pk}"
    assert raw.exists(key) and raw.exists(f"dashboard:stats:{user.pk}:")
    assert 295 <= raw.ttl(key) <= 300
    assert b'"bookings_total":1' in raw.get(key)
    stats = dashboard_cache_get(user=user, salon_id=salon.pk)
    assert without_time(stats) == without_time(
        dashboard_stats(user=user, salon_id=salon.pk)
    )


def test_dashboard_cache_pair_round_trips(user):
    stats = {"bookings_total": 7, "delivery_rate": None}
    assert dashboard_cache_get(user=user) is None
    dashboard_cache_set(user=user, stats=stats)
    assert dashboard_cache_get(user=user) == stats
    assert dashboard_stats_cached(user=user).value == stats


def test_salon_key_ttl_and_value(user):
    salon = SalonFactory(owner=user, name="Hair & Co")
    raw = cache_redis()
    assert salon_cached(salon.pk)["name"] == "Hair & Co"
    assert 1795 <= raw.ttl(f"salon:{salon.pk}") <= 1800
    assert b'"name":"Hair & Co"' in raw.get(f"salon:{salon.pk}")
    salon_cache_invalidate(salon.pk)
    assert salon_cache_get(salon.pk) is None
    salon_cache_set(salon)
    assert salon_cache_get(salon.pk)["id"] == str(salon.pk)
    assert cache_stats()["salon"]["hits"] >= 1


def test_template_and_conversation_keys_are_invalidated_on_save(user):
    raw = cache_redis()
    template = TemplateFactory(salon__owner=user)
    conversation = ConversationFactory(salon=template.salon)
    assert template_cached(template.pk)["body"] == template.body
    assert conversation_cached(conversation.pk)["customer_name"] == "Maria Gomez"
    assert 3595 <= raw.ttl(f"template:{template.pk}") <= 3600
    assert 595 <= raw.ttl(f"conversation:{conversation.pk}") <= 600

    messaging_services.template_update(template=template, data={"body": "New {{1}}"})
    assert template_cache_get(template.pk) is None
    assert template_cached(template.pk)["body"] == "New {{1}}"

    MessageFactory(conversation=conversation)  # a message changes the conversation
    assert conversation_cache_get(conversation.pk) is None
    conversation.customer_name = "María"
    conversation.save()
    assert conversation_cached(conversation.pk)["customer_name"] == "María"


def test_new_owner_salon_shows_on_the_all_salons_view(world, user):
    read(world, "owner", {})
    services.salon_create(
        owner=user, name="Third", whatsapp_phone_number_id="999000000000999"
    )
    new_user = UserFactory()
    assert dashboard_stats_cached(user=new_user).value["bookings_total"] == 0
    response = read(world, "owner", {})
    assert response["X-Cache"] == "miss"
