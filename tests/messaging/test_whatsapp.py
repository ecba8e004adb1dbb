"""The WhatsApp client against a real local HTTP server answering Meta's shapes."""

import json
import logging
import time

import pytest
from werkzeug import Response

from messaging.whatsapp import (
    BACKENDS,
    CloudApiBackend,
    ConsoleBackend,
    WhatsAppError,
    signature_matches,
)
from tests.messaging.conftest import FIXTURES, sign

PHONE = "106540352242922"
PATH = f"/v21.0/{PHONE}/messages"


def send_api(name: str) -> dict:
    return json.loads((FIXTURES / "send_api" / name).read_text())


@pytest.fixture
def backend(httpserver) -> CloudApiBackend:
    return CloudApiBackend(
        base_url=httpserver.url_for("/v21.0"), access_token="test-token", timeout=2
    )


def test_text_request_has_meta_shape_and_bearer(backend, httpserver):
    expected = send_api("request_text.json")
    httpserver.expect_oneshot_request(
        PATH,
        method="POST",
        json=expected,
        headers={"Authorization": "Bearer test-token"},
    ).respond_with_json(send_api("response_success_text.json"))
    result = backend.send_text(
        phone_number_id=PHONE, to=expected["to"], body=expected["text"]["body"]
    )
    assert result.wamid == "wamid.HBgLMTY1MDU1NTEyMzQVAgARGBI2OUUzMDZENTYxRDhEODA3MDMA"
    httpserver.check_assertions()


def test_template_request_has_meta_shape(backend, httpserver):
    expected = send_api("request_template.json")
    httpserver.expect_oneshot_request(
        PATH, method="POST", json=expected
    ).respond_with_json(send_api("response_success_template.json"))
    result = backend.send_template(
        phone_number_id=PHONE,
        to="16505550142",
        name="appointment_reminder",
        language="en_US",
        parameters=["Dana", "Wed 10 Jun, 17:30"],
    )
    assert result.wamid == "wamid.HBgLMTY1MDU1NTAxNDIVAgARGBIzRDE5NzMyQTk4OTczM0I0RkQA"
    assert result.response["messages"][0]["message_status"] == "accepted"
    httpserver.check_assertions()


def test_reply_carries_the_quoted_wamid(backend, httpserver):
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_json(
        send_api("response_success_text.json")
    )
    backend.send_text(phone_number_id=PHONE, to="1", body="b", reply_to_wamid="wamid.Q")
    request, _ = httpserver.log[0]
    assert request.get_json()["context"] == {"message_id": "wamid.Q"}


@pytest.mark.parametrize(
    ("name", "http_status", "code", "retryable"),
    [
        ("error_130429_rate_limit.json", 400, 130429, True),
        ("error_131056_pair_rate_limit.json", 400, 131056, True),
        ("error_131047_reengagement.json", 400, 131047, False),
        ("error_131026_undeliverable.json", 400, 131026, False),
        ("error_190_token_expired.json", 401, 190, False),
        # The code decides, not the HTTP status: a 500 with a permanent code
        # is permanent, a 400 with a transient one is retried.
        ("error_131047_reengagement.json", 500, 131047, False),
    ],
)
def test_errors_are_classified_by_metas_code(
    backend, httpserver, name, http_status, code, retryable
):
    httpserver.expect_oneshot_request(PATH, method="POST").respond_with_json(
        send_api(name), status=http_status
    )
    with pytest.raises(WhatsAppError) as raised:
        backend.send_text(phone_number_id=PHONE, to="16505551234", body="Hi")
    assert raised.value.code == code
    assert raised.value.retryable is retryable
    assert raised.value.as_dict()["code"] == code


@pytest.mark.parametrize("code", [4, 80007, 131000, 131016])
def test_transient_codes_retry(backend, httpserver, code):
    body = {"error": {"message": "x", "type": "OAuthException", "code": code}}
    httpserver.expect_oneshot_request(PATH).respond_with_json(body, status=400)
    with pytest.raises(WhatsAppError) as raised:
        backend.send_text(phone_number_id=PHONE, to="1", body="Hi")
    assert raised.value.retryable


@pytest.mark.parametrize("code", [131050, 131051, 132000, 132001, 132012, 100])
def test_permanent_and_unknown_codes_do_not_retry(backend, httpserver, code):
    body = {"error": {"message": "x", "type": "OAuthException", "code": code}}
    httpserver.expect_oneshot_request(PATH).respond_with_json(body, status=400)
    with pytest.raises(WhatsAppError) as raised:
        backend.send_text(phone_number_id=PHONE, to="1", body="Hi")
    assert not raised.value.retryable


def test_expired_token_logs_an_error_for_operators(backend, httpserver, caplog):
    httpserver.expect_oneshot_request(PATH).respond_with_json(
        send_api("error_190_token_expired.json"), status=401
    )
    with caplog.at_level(logging.ERROR, logger="messaging.whatsapp"):
        with pytest.raises(WhatsAppError):
            backend.send_text(phone_number_id=PHONE, to="1", body="Hi")
    assert "WHATSAPP_ACCESS_TOKEN" in caplog.text


def test_an_answer_without_an_error_envelope_is_retried(backend, httpserver):
    httpserver.expect_oneshot_request(PATH).respond_with_data(
        "<html>502 Bad Gateway</html>", status=502
    )
    with pytest.raises(WhatsAppError) as raised:
        backend.send_text(phone_number_id=PHONE, to="1", body="Hi")
    assert raised.value.retryable and raised.value.code is None


def test_a_timeout_is_retried(httpserver):
    def slow(request):
        time.sleep(1.5)
        return Response("{}", content_type="application/json")

    httpserver.expect_oneshot_request(PATH).respond_with_handler(slow)
    backend = CloudApiBackend(
        base_url=httpserver.url_for("/v21.0"), access_token="t", timeout=0.3
    )
    with pytest.raises(WhatsAppError) as raised:
        backend.send_text(phone_number_id=PHONE, to="1", body="Hi")
    assert raised.value.retryable


def test_unreachable_server_is_retried():
    from tests.processes import free_port

    backend = CloudApiBackend(
        base_url=f"http://127.0.0.1:{free_port()}/v21.0", access_token="t", timeout=1
    )
    with pytest.raises(WhatsAppError) as raised:
        backend.send_text(phone_number_id=PHONE, to="1", body="Hi")
    assert raised.value.retryable


def test_console_backend_returns_a_wamid():
    result = ConsoleBackend().send_text(phone_number_id=PHONE, to="1", body="Hi")
    assert result.wamid.startswith("wamid.console.")


def test_both_backends_are_registered():
    assert set(BACKENDS) == {"console", "cloud_api"}


def test_signature_check():
    body = b'{"a": 1}'
    assert signature_matches(body, sign(body, "k"), "k")
    assert signature_matches(
        body, sign(body, "k").upper().replace("SHA256", "sha256"), "k"
    )
    assert not signature_matches(body, sign(body, "other"), "k")
    assert not signature_matches(body + b" ", sign(body, "k"), "k")
    assert not signature_matches(body, None, "k")
    assert not signature_matches(body, sign(body, ""), "")
