"""The lean webhook path (saas.wsgi: messaging/api/ingest.py in front of Django)
and its group commit (messaging/inbox_commit.py), called as a WSGI server
calls it; tests/messaging/test_webhook.py covers the same contract through
Django's view, which shares the checks and the group commit."""

import io
import json
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections, connection, connections

from messaging.inbox_commit import group_commit
from messaging.models import WebhookEvent
from saas.wsgi import application
from tests.conftest import test_database_url as database_url
from tests.messaging.conftest import WEBHOOK_URL, fixture_bytes, sign, text_body
from tests.processes import free_port
from tests.utils import wait_until


class _Unreadable(io.RawIOBase):
    def read(self, *args):
        raise AssertionError("the body was read")


def call(
    method: str = "POST",
    path: str = WEBHOOK_URL,
    body: bytes = b"",
    *,
    signature: str | None = None,
    query: str = "",
    content_length: str | None = None,
    stream=None,
) -> tuple[int, bytes, dict]:
    """One request through the web process's WSGI application."""
    if signature is None:
        signature = sign(body)
    environ = {
        "REQUEST_METHOD": method,
        "PATH_INFO": path,
        "QUERY_STRING": query,
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "80",
        "HTTP_HOST": "127.0.0.1",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "CONTENT_TYPE": "application/json",
        "CONTENT_LENGTH": str(len(body)) if content_length is None else content_length,
        "wsgi.input": stream or io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.url_scheme": "http",
        "wsgi.version": (1, 0),
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }
    if signature:
        environ["HTTP_X_HUB_SIGNATURE_256"] = signature
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    # As Django's test client does: a request that falls through to Django
    # must not close the test's connection at its end.
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        content = b"".join(application(environ, start_response))
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)
    return answer["status"], content, answer["headers"]


def post_in_thread(body: bytes) -> int:
    try:
        return call(body=body)[0]
    finally:
        connections.close_all()


def raw(wamid: str, **kwargs) -> bytes:
    return json.dumps(text_body(wamid, **kwargs)).encode()


# --- the contract, through the lean path -----------------------------------------


@pytest.mark.django_db
def test_valid_post_is_stored_pending_and_acknowledged(salon):
    body = fixture_bytes("01_text_inbound.json")
    status, content, headers = call(body=body)
    assert (status, content) == (200, b"EVENT_RECEIVED")
    assert headers["Content-Type"].startswith("text/plain")
    event = WebhookEvent.objects.get()
    assert event.status == "pending" and event.body.encode() == body


@pytest.mark.django_db
@pytest.mark.parametrize("case", ["unsigned", "wrong secret", "tampered body"])
def test_bad_signature_is_403_and_stores_nothing(salon, case):
    body = fixture_bytes("01_text_inbound.json")
    signature, sent = {
        "unsigned": ("", body),
        "wrong secret": (sign(body, secret="not-the-app-secret"), body),
        "tampered body": (sign(body), body.replace(b"haircut", b"haircat")),
    }[case]
    assert call(body=sent, signature=signature)[0] == 403
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "body", [b'{"object": ', b"[1, 2]", b"\xff\xfe{}", b"", b"[" * 5000 + b"]" * 5000]
)
def test_signed_body_that_is_not_a_json_object_is_400(salon, body):
    assert call(body=body)[0] == 400
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
def test_over_4_mib_is_413_before_the_body_is_read(salon):
    status, _, _ = call(
        body=b"", content_length=str(4 * 1024 * 1024 + 1), stream=_Unreadable()
    )
    assert status == 413
    big = b'{"a": "' + b"x" * (4 * 1024 * 1024) + b'"}'
    assert call(body=big, content_length="")[0] == 413  # no length: read capped
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db
def test_the_handshake_and_other_paths_fall_through_to_django(settings):
    settings.WHATSAPP_VERIFY_TOKEN = "s3cret-token"
    query = "hub.mode=subscribe&hub.verify_token=s3cret-token&hub.challenge=4242"
    assert call("GET", query=query)[:2] == (200, b"4242")
    assert call("GET", query="hub.mode=subscribe&hub.verify_token=no")[0] == 403
    assert call("GET", "/healthz")[0] == 200
    assert call("PUT", body=b"{}")[0] == 405  # Django's view answers
    assert not WebhookEvent.objects.exists()


@pytest.mark.django_db(transaction=True)
def test_database_down_is_503_so_meta_retries(salon):
    body = fixture_bytes("01_text_inbound.json")
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())  # nothing listens there
    try:
        assert call(body=body)[0] == 503
    finally:
        connection.close()
        connection.settings_dict.update(original)
    assert not WebhookEvent.objects.exists()
    assert call(body=body)[0] == 200
    assert WebhookEvent.objects.count() == 1


# --- group commit ------------------------------------------------------------------

GATE_LOCK = 17017
FAIL_MARKER = "FAIL-THE-COMMIT-17"


@pytest.fixture
def commit_gate(transactional_db):
    """A deferred constraint trigger on the inbox: at COMMIT, each row waits
    for advisory lock 17017 (held by the test to hold commits back), and a
    body carrying FAIL_MARKER makes the commit fail."""
    admin = psycopg.connect(database_url(), autocommit=True)
    admin.execute(
        f"""
        CREATE FUNCTION i17_commit_gate() RETURNS trigger AS $$
        BEGIN
          IF NEW.body LIKE '%{FAIL_MARKER}%' THEN
            RAISE EXCEPTION 'commit refused by the test';
          END IF;
          PERFORM pg_advisory_xact_lock({GATE_LOCK});
          RETURN NULL;
        END $$ LANGUAGE plpgsql;
        CREATE CONSTRAINT TRIGGER i17_commit_gate AFTER INSERT
          ON messaging_webhookevent DEFERRABLE INITIALLY DEFERRED
          FOR EACH ROW EXECUTE FUNCTION i17_commit_gate();
        """
    )
    try:
        yield admin
    finally:
        admin.execute(
            "DROP TRIGGER IF EXISTS i17_commit_gate ON messaging_webhookevent;"
            "DROP FUNCTION IF EXISTS i17_commit_gate();"
        )
        admin.close()


def commit_waiting_on_gate(admin) -> bool:
    return bool(
        admin.execute(
            "SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND NOT granted "
            "AND objid = %s",
            [GATE_LOCK],
        ).fetchone()
    )


def stored_wamids(admin) -> set[str]:
    """What another connection sees: committed rows only."""
    return {
        json.loads(body)["entry"][0]["changes"][0]["value"]["messages"][0]["id"]
        for (body,) in admin.execute("SELECT body FROM messaging_webhookevent")
    }


@pytest.mark.django_db(transaction=True)
def test_a_request_answers_200_only_after_its_row_is_committed(salon, commit_gate):
    admin = commit_gate
    gate = psycopg.connect(database_url(), autocommit=True)
    gate.execute("SELECT pg_advisory_lock(%s)", [GATE_LOCK])
    with ThreadPoolExecutor(max_workers=1) as pool:
        answer = pool.submit(post_in_thread, raw("wamid.GATED"))
        wait_until(
            lambda: commit_waiting_on_gate(admin),
            timeout=20,
            message="the INSERT is committing",
        )
        # Inserted, committing, held at the gate: not answered, not visible.
        assert not answer.done()
        assert stored_wamids(admin) == set()
        gate.execute("SELECT pg_advisory_unlock(%s)", [GATE_LOCK])
        assert answer.result(timeout=20) == 200
    gate.close()
    assert stored_wamids(admin) == {"wamid.GATED"}


@pytest.mark.django_db(transaction=True)
def test_a_failed_group_commit_answers_503_to_all_its_requests_and_stores_none(
    salon, commit_gate
):
    admin = commit_gate
    gate = psycopg.connect(database_url(), autocommit=True)
    gate.execute("SELECT pg_advisory_lock(%s)", [GATE_LOCK])
    groups_before = group_commit.groups
    with ThreadPoolExecutor(max_workers=12) as pool:
        first = pool.submit(post_in_thread, raw("wamid.FIRST"))
        wait_until(lambda: commit_waiting_on_gate(admin), message="first committing")
        # While the first commit is held, the next requests queue up: they
        # form the next group, one of them carrying a body the commit refuses.
        bodies = [raw(f"wamid.GROUP{n}") for n in range(9)]
        bodies.append(raw("wamid.BAD", text=FAIL_MARKER))
        group = [pool.submit(post_in_thread, body) for body in bodies]
        wait_until(lambda: group_commit.queued == len(bodies), message="group queued")
        gate.execute("SELECT pg_advisory_unlock(%s)", [GATE_LOCK])
        assert first.result(timeout=20) == 200
        assert [answer.result(timeout=20) for answer in group] == [503] * len(bodies)
    gate.close()
    assert group_commit.groups - groups_before == 2  # one commit for the ten
    assert stored_wamids(admin) == {"wamid.FIRST"}

    # The same requests again (Meta retries), without the refused body: one
    # commit stores them all.
    with ThreadPoolExecutor(max_workers=12) as pool:
        assert list(pool.map(post_in_thread, bodies[:-1])) == [200] * 9
    assert stored_wamids(admin) == {"wamid.FIRST"} | {
        f"wamid.GROUP{n}" for n in range(9)
    }
