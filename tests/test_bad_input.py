"""Bad requests get a 4xx in OpenAI's error shape that names the problem, and never a 500."""

from __future__ import annotations

from typing import Any

import pytest

from tests.harness import Daemon

GOOD_MESSAGES = [{"role": "user", "content": "hi"}]


def post(daemon: Daemon, content: bytes | None = None, json: Any = None) -> Any:
    with daemon.http() as http:
        return http.post("/v1/chat/completions", content=content, json=json, headers={"content-type": "application/json"})


def error_of(response: Any) -> dict[str, Any]:
    body = response.json()
    assert set(body["error"]) >= {"message", "type", "param", "code"}
    return body["error"]


def test_malformed_json_is_400(local_daemon: Daemon) -> None:
    response = post(local_daemon, content=b'{"model": "default", "messages": [')
    assert response.status_code == 400
    assert "not valid JSON" in error_of(response)["message"]


def test_missing_messages_is_400_naming_it(local_daemon: Daemon) -> None:
    response = post(local_daemon, json={"model": "default"})
    assert response.status_code == 400
    assert error_of(response)["param"] == "messages"
    assert "'messages' is required" in error_of(response)["message"]


def test_unknown_model_is_404(local_daemon: Daemon) -> None:
    response = post(local_daemon, json={"model": "gpt-nonexistent", "messages": GOOD_MESSAGES})
    assert response.status_code == 404
    assert error_of(response)["code"] == "model_not_found"
    assert "gpt-nonexistent" in error_of(response)["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": "default", "messages": "hello"}, "messages"),
        ({"model": "default", "messages": []}, "messages"),
        ({"model": "default", "messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        ({"model": "default", "messages": GOOD_MESSAGES, "temperature": "hot"}, "temperature"),
        ({"model": "default", "messages": GOOD_MESSAGES, "max_tokens": 0}, "max_tokens"),
        ({"model": 7, "messages": GOOD_MESSAGES}, "model"),
        ({"model": "default", "messages": GOOD_MESSAGES, "stream": "yes please"}, "stream"),
    ],
)
def test_wrongly_typed_fields_are_400(local_daemon: Daemon, body: dict[str, Any], param: str) -> None:
    response = post(local_daemon, json=body)
    assert response.status_code == 400
    assert error_of(response)["param"] == param


@pytest.mark.parametrize("content", [b"", b"[]", b"null", b'"text"', b"\xff\xfe", b"[" * 100000])
def test_non_object_bodies_are_400(local_daemon: Daemon, content: bytes) -> None:
    response = post(local_daemon, content=content)
    assert response.status_code == 400
    assert error_of(response)["type"] == "invalid_request_error"


def test_oversized_body_is_413(local_daemon: Daemon) -> None:
    huge = {"model": "default", "messages": [{"role": "user", "content": "x" * 1_100_000}]}
    response = post(local_daemon, json=huge)
    assert response.status_code == 413
    assert "max_body_bytes" in error_of(response)["message"]


def test_unsupported_parameter_is_rejected_by_name(local_daemon: Daemon) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    response = post(local_daemon, json={"model": "default", "messages": GOOD_MESSAGES, "tools": tools})
    assert response.status_code == 400
    assert error_of(response)["param"] == "tools"


def test_unknown_path_is_404_in_openai_shape(local_daemon: Daemon) -> None:
    with local_daemon.http() as http:
        response = http.get("/v1/nothing-here")
    assert response.status_code == 404
    assert error_of(response)["code"] == "not_found"


def test_daemon_still_serves_after_bad_input(local_daemon: Daemon) -> None:
    post(local_daemon, content=b"{{{{")
    response = post(local_daemon, json={"model": "default", "messages": GOOD_MESSAGES, "max_tokens": 2})
    assert response.status_code == 200


def test_misspelled_model_gets_suggestion(local_daemon: Daemon) -> None:
    response = post(local_daemon, json={"model": "defualt", "messages": GOOD_MESSAGES})
    assert response.status_code == 404
    assert 'did you mean "default"?' in error_of(response)["message"]
    assert "it serves: default, smollm2" in error_of(response)["message"]


def test_wrong_method_names_the_right_one(local_daemon: Daemon) -> None:
    with local_daemon.http() as http:
        response = http.get("/v1/chat/completions")
    assert response.status_code == 405
    assert "POST" in error_of(response)["message"]


def test_routed_error_carries_bridge_headers(local_daemon: Daemon) -> None:
    response = post(local_daemon, json={"model": "default", "messages": [{"role": "user", "content": "word " * 3000}]})
    assert response.status_code == 400
    assert response.headers["x-bridge-route"] == "default"
    assert "x-bridge-attempts" in response.headers


def test_idle_status_counts_no_request_in_flight(local_daemon: Daemon) -> None:
    with local_daemon.http() as http:
        status = http.get("/admin/status").json()
    assert status["in_flight"] == 0
