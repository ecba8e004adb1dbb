"""The Graph API stand-in behaves like Meta's Cloud API, over real HTTP.

Run without Django: ``pytest -q -p no:django tests/test_graph_api_standin.py``.
"""

import json
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.graph_api import GraphApiClient, GraphApiStandIn

TOKEN = "test-token"
SALON = "106540352242922"
OTHER_SALON = "109876543210987"
MARIA = "16505551234"
MARIA_BSUID = "US.13491208655302741918"
SEND_API = Path(__file__).parent / "fixtures" / "whatsapp" / "send_api"
REPO = Path(__file__).resolve().parent.parent


def fixture(name: str) -> dict:
    return json.loads((SEND_API / name).read_text())


def text_to(to: str, body: str = "hello") -> dict:
    return {
        "messaging_product": "whatsapp",
        "recipient_type": "individual",
        "to": to,
        "type": "text",
        "text": {"preview_url": False, "body": body},
    }


@pytest.fixture
def graph():
    with GraphApiStandIn(token=TOKEN, latency=0.0) as standin:
        yield standin


@pytest.fixture
def http():
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    with httpx.Client(timeout=10.0, limits=limits) as client:
        yield client


def send(http, graph, payload, *, number=SALON, token=TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.post(
        f"{graph.base_url}/{number}/messages", json=payload, headers=headers
    )


def send_many(http, graph, payloads, *, number=SALON) -> list[httpx.Response]:
    with ThreadPoolExecutor(max_workers=len(payloads)) as pool:
        return list(pool.map(lambda p: send(http, graph, p, number=number), payloads))


def codes(responses) -> list[int | None]:
    return [r.json().get("error", {}).get("code") for r in responses]


def assert_envelope_like(body: dict, fixture_name: str) -> None:
    expected = fixture(fixture_name)["error"]
    actual = body["error"]
    assert set(actual) == set(expected)
    assert actual["fbtrace_id"]
    for key in expected.keys() - {"fbtrace_id"}:
        assert actual[key] == expected[key], key


# -- messages ---------------------------------------------------------------


def test_text_send_answers_the_documented_success_shape(graph, http):
    response = send(http, graph, fixture("request_text.json"))

    assert response.status_code == 200
    body = response.json()
    expected = fixture("response_success_text.json")
    assert body.keys() == expected.keys()
    assert body["contacts"] == [{"input": MARIA, "wa_id": MARIA}]
    assert list(body["messages"][0]) == ["id"]
    assert body["messages"][0]["id"].startswith("wamid.")
    [sent] = graph.accepted
    assert (sent.phone_number_id, sent.recipient) == (SALON, MARIA)
    assert sent.wamid == body["messages"][0]["id"]
    assert sent.payload == fixture("request_text.json")


def test_template_send_is_accepted_and_normalises_the_input(graph, http):
    payload = fixture("request_template.json") | {"to": "+1 650-555-0142"}

    body = send(http, graph, payload).json()

    assert body["contacts"] == [{"input": "+1 650-555-0142", "wa_id": "16505550142"}]
    assert body["messages"][0]["message_status"] == "accepted"
    assert graph.sends_to("16505550142")[0].payload["type"] == "template"


def test_send_to_a_bsuid_answers_user_id_instead_of_wa_id(graph, http):
    payload = text_to(MARIA) | {"recipient": MARIA_BSUID}
    del payload["to"]

    body = send(http, graph, payload).json()

    assert body["contacts"] == [{"input": MARIA_BSUID, "user_id": MARIA_BSUID}]
    assert [s.recipient for s in graph.sends_to(MARIA_BSUID)] == [MARIA_BSUID]


def test_to_wins_when_both_to_and_recipient_are_sent(graph, http):
    body = send(http, graph, text_to(MARIA) | {"recipient": MARIA_BSUID}).json()

    assert body["contacts"] == [{"input": MARIA, "wa_id": MARIA}]


def test_wamids_are_unique(graph, http):
    payloads = [text_to(f"1650555{i:04d}") for i in range(30)]

    responses = send_many(http, graph, payloads)

    wamids = {r.json()["messages"][0]["id"] for r in responses}
    assert len(wamids) == 30
    assert all(w.startswith("wamid.HBg") for w in wamids)


@pytest.mark.parametrize("token", ["wrong-token", None])
def test_bad_or_missing_token_answers_190(graph, http, token):
    response = send(http, graph, text_to(MARIA), token=token)

    assert response.status_code == 401
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (190, "OAuthException")
    assert error["fbtrace_id"]
    assert graph.accepted == []
    assert [r.error_code for r in graph.rejected] == [190]


@pytest.mark.parametrize(
    "payload",
    [
        {"recipient_type": "individual", "to": MARIA, "type": "text"},
        {"messaging_product": "sms", "to": MARIA, "text": {"body": "x"}},
        {"messaging_product": "whatsapp", "type": "text", "text": {"body": "x"}},
        {"messaging_product": "whatsapp", "recipient": "maria", "text": {"body": "x"}},
        {"messaging_product": "whatsapp", "to": MARIA, "type": "fax", "fax": {}},
        {"messaging_product": "whatsapp", "to": MARIA, "type": "text"},
        {"messaging_product": "whatsapp", "to": MARIA, "text": {"body": ""}},
        {"messaging_product": "whatsapp", "to": MARIA, "type": "template"},
        [1, 2, 3],
    ],
)
def test_invalid_body_answers_100(graph, http, payload):
    response = send(http, graph, payload)

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["type"]) == (100, "OAuthException")
    assert error["message"].startswith("(#100)")
    assert graph.accepted == []


def test_body_that_is_not_json_answers_100(graph, http):
    response = http.post(
        f"{graph.base_url}/{SALON}/messages",
        content=b"{not json",
        headers={"Authorization": f"Bearer {TOKEN}"},
    )

    assert response.status_code == 400
    assert response.json()["error"]["code"] == 100


# -- throughput and pair limits ----------------------------------------------


def test_more_than_80_sends_in_a_second_hit_130429(graph, http):
    graph.configure(latency=0.05)
    payloads = [text_to(f"1650555{i:04d}") for i in range(120)]

    responses = send_many(http, graph, payloads)

    statuses = [r.status_code for r in responses]
    # Admission is decided on arrival, and the 120 arrive within about a second.
    assert statuses.count(200) <= 80
    assert statuses.count(200) + statuses.count(400) == 120
    assert set(codes(r for r in responses if r.status_code == 400)) == {130429}
    rejected = next(r for r in responses if r.status_code == 400)
    assert_envelope_like(rejected.json(), "error_130429_rate_limit.json")
    assert graph.max_accepted_in_any_window(SALON, seconds=1.0) <= 80
    assert len(graph.accepted) == statuses.count(200)
    assert len(graph.rejected) == statuses.count(400)


def test_throughput_is_counted_per_phone_number(graph, http):
    graph.configure(throughput=5)

    first = send_many(http, graph, [text_to(f"1650555{i:04d}") for i in range(5)])
    other = send_many(
        http, graph, [text_to(f"1650555{i:04d}") for i in range(5)], number=OTHER_SALON
    )
    over = send(http, graph, text_to("16505559999"))

    assert [r.status_code for r in first + other] == [200] * 10
    assert over.status_code == 400
    assert over.json()["error"]["code"] == 130429
    assert graph.max_accepted_in_any_window(SALON) == 5
    assert graph.max_accepted_in_any_window(OTHER_SALON) == 5


def test_throughput_can_be_set_per_number(graph, http):
    graph.set_throughput(SALON, 2)
    graph.set_throughput(OTHER_SALON, None)

    ours = [send(http, graph, text_to(f"1650555{i:04d}")) for i in range(3)]
    theirs = [
        send(http, graph, text_to(f"1650555{i:04d}"), number=OTHER_SALON)
        for i in range(100)
    ]

    assert [r.status_code for r in ours] == [200, 200, 400]
    assert all(r.status_code == 200 for r in theirs)


def test_pair_rate_limit_answers_131056_after_the_burst(graph, http):
    graph.configure(pair_burst=2, pair_interval=6.0)

    responses = [send(http, graph, text_to(MARIA)) for _ in range(3)]
    other_customer = send(http, graph, text_to("16505559876"))
    same_customer_other_number = send(http, graph, text_to(MARIA), number=OTHER_SALON)

    assert [r.status_code for r in responses] == [200, 200, 400]
    assert_envelope_like(responses[2].json(), "error_131056_pair_rate_limit.json")
    assert other_customer.status_code == 200
    assert same_customer_other_number.status_code == 200
    assert len(graph.sends_to(MARIA)) == 3


def test_pair_rate_limit_refills_over_the_interval(graph, http):
    graph.configure(pair_burst=1, pair_interval=0.2)

    first = send(http, graph, text_to(MARIA))
    too_soon = send(http, graph, text_to(MARIA))
    time.sleep(0.25)  # the configured refill interval
    later = send(http, graph, text_to(MARIA))

    assert [first.status_code, too_soon.status_code, later.status_code] == [
        200,
        400,
        200,
    ]


def test_pair_rate_limit_can_be_turned_off(graph, http):
    graph.configure(pair_burst=None)

    responses = [send(http, graph, text_to(MARIA)) for _ in range(60)]

    assert all(r.status_code == 200 for r in responses)


# -- forced errors -------------------------------------------------------------


def test_forced_error_for_a_count_of_sends(graph, http):
    graph.force_error(code=130429, count=2)

    responses = [send(http, graph, text_to(f"1650555{i:04d}")) for i in range(3)]

    assert [r.status_code for r in responses] == [400, 400, 200]
    assert_envelope_like(responses[0].json(), "error_130429_rate_limit.json")


def test_forced_error_for_a_while(graph, http):
    graph.force_error(code=131000, for_seconds=0.3)

    during = send(http, graph, text_to(MARIA))
    time.sleep(0.35)  # the configured duration
    after = send(http, graph, text_to(MARIA))

    assert during.status_code == 500
    assert during.json()["error"]["code"] == 131000
    assert after.status_code == 200


def test_forced_error_for_one_number_only(graph, http):
    graph.force_error(code=190, phone_number_id=OTHER_SALON)

    ours = send(http, graph, text_to(MARIA))
    theirs = send(http, graph, text_to(MARIA), number=OTHER_SALON)

    assert ours.status_code == 200
    assert theirs.status_code == 401
    assert_envelope_like(theirs.json(), "error_190_token_expired.json")
    graph.clear_failures()
    assert send(http, graph, text_to(MARIA), number=OTHER_SALON).status_code == 200


@pytest.mark.parametrize(
    ("code", "status", "fixture_name"),
    [
        (131026, 400, "error_131026_undeliverable.json"),
        (131047, 400, "error_131047_reengagement.json"),
        (132001, 404, None),
        (190, 401, "error_190_token_expired.json"),
    ],
)
def test_failing_recipient(graph, http, code, status, fixture_name):
    graph.fail_recipient("+1 650-555-1234", code)

    failed = send(http, graph, text_to(MARIA))
    other = send(http, graph, text_to("16505559876"))

    assert failed.status_code == status
    assert failed.json()["error"]["code"] == code
    if fixture_name:
        assert_envelope_like(failed.json(), fixture_name)
    assert other.status_code == 200
    assert graph.sends_to(MARIA) == []


def test_failing_recipient_for_a_count(graph, http):
    graph.fail_recipient(MARIA_BSUID, 131026, count=1)
    payload = {
        "messaging_product": "whatsapp",
        "recipient": MARIA_BSUID,
        "type": "text",
        "text": {"body": "hi"},
    }

    assert send(http, graph, payload).status_code == 400
    assert send(http, graph, payload).status_code == 200


# -- latency and the record ------------------------------------------------------


def test_latency_is_honoured(graph, http):
    graph.configure(latency=0.2)

    started = time.monotonic()
    response = send(http, graph, text_to(MARIA))
    elapsed = time.monotonic() - started

    assert response.status_code == 200
    assert elapsed >= 0.2


def test_sends_wait_their_latency_in_parallel(graph, http):
    graph.configure(latency=0.3)
    payloads = [text_to(f"1650555{i:04d}") for i in range(20)]

    responses = send_many(http, graph, payloads)

    assert all(r.status_code == 200 for r in responses)
    # No lock is held while a send waits, so several wait at once.
    assert graph.max_in_flight > 1


def test_reset_forgets_everything(graph, http):
    graph.configure(throughput=1)
    graph.force_error(code=131000, count=1)
    send(http, graph, text_to(MARIA))
    send(http, graph, text_to(MARIA))

    graph.reset()

    assert graph.requests == []
    assert graph.accepted == []
    assert send(http, graph, text_to(MARIA)).status_code == 200


def test_max_accepted_in_any_window_counts_a_sliding_window():
    from tests.graph_api import max_in_window

    # Half-open windows [t, t + seconds): 0.0 and 1.0 are in different seconds.
    assert max_in_window([0.0, 0.5, 1.0, 1.5], 1.0) == 2
    assert max_in_window([0.0, 0.5, 1.0, 1.5], 1.01) == 3
    assert max_in_window([0.0, 0.1, 0.2, 3.0], 1.0) == 3
    assert max_in_window([], 1.0) == 0


# -- media ----------------------------------------------------------------------


def media_lookup(http, graph, media_id, token=TOKEN) -> httpx.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return http.get(f"{graph.base_url}/{media_id}", headers=headers)


def test_media_lookup_and_download(graph, http):
    content = b"\xff\xd8\xff" + b"jpeg" * 100
    graph.add_media("2130857345626467", content, "image/jpeg")

    info = media_lookup(http, graph, "2130857345626467")

    assert info.status_code == 200
    body = info.json()
    assert set(body) == {
        "messaging_product",
        "url",
        "mime_type",
        "sha256",
        "file_size",
        "id",
    }
    assert body["messaging_product"] == "whatsapp"
    assert body["mime_type"] == "image/jpeg"
    assert body["file_size"] == len(content)
    assert body["id"] == "2130857345626467"
    assert body["url"].startswith(f"{graph.origin}/_media/")
    download = http.get(body["url"], headers={"Authorization": f"Bearer {TOKEN}"})
    assert download.status_code == 200
    assert download.content == content
    assert download.headers["content-type"] == "image/jpeg"
    import hashlib

    assert hashlib.sha256(download.content).hexdigest() == body["sha256"]


def test_media_download_needs_the_token(graph, http):
    graph.add_media("111", b"data", "audio/ogg")
    url = media_lookup(http, graph, "111").json()["url"]

    assert http.get(url).status_code == 401
    assert http.get(url, headers={"Authorization": "Bearer nope"}).status_code == 401


def test_media_lookup_needs_the_token(graph, http):
    graph.add_media("111", b"data", "audio/ogg")

    response = media_lookup(http, graph, "111", token="nope")

    assert response.status_code == 401
    assert response.json()["error"]["code"] == 190


def test_media_url_expires(graph, http):
    graph.configure(media_url_ttl=0.3)
    graph.add_media("222", b"data", "image/webp")
    url = media_lookup(http, graph, "222").json()["url"]
    auth = {"Authorization": f"Bearer {TOKEN}"}
    assert http.get(url, headers=auth).status_code == 200

    time.sleep(0.35)  # the configured URL lifetime

    assert http.get(url, headers=auth).status_code == 404
    fresh = media_lookup(http, graph, "222").json()["url"]
    assert http.get(fresh, headers=auth).status_code == 200


@pytest.mark.parametrize("deleted", [False, True])
def test_unknown_or_deleted_media_answers_object_missing(graph, http, deleted):
    if deleted:
        graph.add_media("333", b"data", "image/jpeg")
        graph.delete_media("333")

    response = media_lookup(http, graph, "333")

    assert response.status_code == 400
    error = response.json()["error"]
    assert (error["code"], error["error_subcode"]) == (100, 33)
    assert error["type"] == "GraphMethodException"
    assert "Object with ID '333' does not exist" in error["message"]


def test_media_url_of_deleted_media_is_gone(graph, http):
    graph.add_media("444", b"data", "image/jpeg")
    url = media_lookup(http, graph, "444").json()["url"]

    graph.delete_media("444")

    assert (
        http.get(url, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 404
    )


def test_next_media_lookups_fail_transiently(graph, http):
    graph.add_media("555", b"data", "image/jpeg")
    graph.fail_media_lookups(count=2, code=2)

    responses = [media_lookup(http, graph, "555") for _ in range(3)]

    assert [r.status_code for r in responses] == [500, 500, 200]
    error = responses[0].json()["error"]
    assert error["code"] == 2
    assert error["is_transient"] is True


def test_media_body_larger_than_announced_and_other_content_type(graph, http):
    content = b"x" * 5000
    graph.add_media(
        "666", content, "image/jpeg", announced_size=100, served_mime_type="text/html"
    )

    info = media_lookup(http, graph, "666").json()
    download = http.get(info["url"], headers={"Authorization": f"Bearer {TOKEN}"})

    assert info["file_size"] == 100
    assert info["mime_type"] == "image/jpeg"
    assert len(download.content) == 5000
    assert download.headers["content-type"] == "text/html"


# -- separate process ---------------------------------------------------------


@pytest.fixture
def standin_process():
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.graph_api",
            "--port",
            "0",
            "--latency",
            "0.05",
            "--token",
            TOKEN,
            "--throughput",
            "3",
        ],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        line = process.stdout.readline()  # printed once the port listens
        assert line.startswith("GRAPH_STANDIN_LISTENING "), line
        base_url = line.split()[1]
        client = GraphApiClient(base_url)
        client.wait_ready(deadline_seconds=10.0)
        yield base_url, client
    finally:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        process.stdout.close()


def test_separate_process_mode(standin_process, http):
    base_url, client = standin_process
    assert base_url.endswith("/v21.0")
    auth = {"Authorization": f"Bearer {TOKEN}"}

    responses = [
        http.post(f"{base_url}/{SALON}/messages", json=text_to(MARIA), headers=auth)
        for _ in range(4)
    ]

    assert [r.status_code for r in responses] == [200, 200, 200, 400]
    assert responses[3].json()["error"]["code"] == 130429
    sends = client.accepted()
    assert len(sends) == 3
    assert {s["recipient"] for s in sends} == {MARIA}
    assert sends[0]["wamid"] == responses[0].json()["messages"][0]["id"]
    assert len(client.sends_to("+1 650 555 1234")) == 3
    assert [r["error_code"] for r in client.rejected()] == [130429]
    assert client.max_accepted_in_any_window(SALON) == 3
    assert client.stats()["accepted"] == 3

    client.reset()
    client.configure(throughput=None, latency=0.0)
    client.force_error(code=131047, count=1)
    client.add_media("777", b"bytes", "audio/ogg")
    forced = http.post(
        f"{base_url}/{SALON}/messages", json=text_to(MARIA), headers=auth
    )
    info = http.get(f"{base_url}/777", headers=auth).json()

    assert forced.json()["error"]["code"] == 131047
    assert http.get(info["url"], headers=auth).content == b"bytes"
    assert client.accepted() == []
    assert client.config()["throughput"] is None
