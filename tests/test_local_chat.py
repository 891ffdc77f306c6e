"""The real daemon answering from the real local model, through the official openai client."""

from __future__ import annotations

import asyncio

import openai
import pytest

from tests.conftest import SpawnDaemon
from tests.harness import LOCAL_MODEL, Daemon, local_config

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


def test_chat_names_paris_with_usage(local_daemon: Daemon) -> None:
    client = local_daemon.openai_client()
    raw = client.chat.completions.with_raw_response.create(model="default", messages=QUESTION, temperature=0, seed=1)
    completion = raw.parse()
    assert "Paris" in (completion.choices[0].message.content or "")
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None
    assert completion.usage.prompt_tokens > 10
    assert completion.usage.completion_tokens > 0
    assert completion.usage.total_tokens == completion.usage.prompt_tokens + completion.usage.completion_tokens
    assert raw.headers["x-bridge-deployment"] == "smollm2"
    assert raw.headers["x-bridge-route"] == "default"
    assert raw.headers["x-bridge-attempts"] == "1"
    assert float(raw.headers["x-bridge-overhead-ms"]) >= 0


def test_stream_with_usage_matches_non_stream(local_daemon: Daemon) -> None:
    client = local_daemon.openai_client()
    whole = client.chat.completions.create(model="default", messages=QUESTION, temperature=0, seed=1)
    chunks = list(client.chat.completions.create(
        model="default", messages=QUESTION, temperature=0, seed=1, stream=True, stream_options={"include_usage": True}
    ))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert sum(1 for chunk in chunks if chunk.choices and chunk.choices[0].delta.role) == 1
    finishes = [chunk.choices[0].finish_reason for chunk in chunks if chunk.choices and chunk.choices[0].finish_reason]
    assert finishes == ["stop"]
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    text = "".join(chunk.choices[0].delta.content or "" for chunk in chunks if chunk.choices)
    assert text == whole.choices[0].message.content
    assert chunks[-1].usage.prompt_tokens == whole.usage.prompt_tokens  # type: ignore[union-attr]
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens  # type: ignore[union-attr]
    assert len({chunk.id for chunk in chunks}) == 1


def test_stream_without_usage_has_no_usage_chunk(local_daemon: Daemon) -> None:
    client = local_daemon.openai_client()
    chunks = list(client.chat.completions.create(model="default", messages=QUESTION, max_tokens=5, stream=True))
    assert all(chunk.choices for chunk in chunks)
    assert all(chunk.usage is None for chunk in chunks)
    assert chunks[-1].choices[0].finish_reason == "length"


def test_stream_ends_with_done_line(local_daemon: Daemon) -> None:
    body = {"model": "default", "messages": QUESTION, "max_tokens": 3, "stream": True}
    with local_daemon.http() as http:
        response = http.post("/v1/chat/completions", json=body)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = [event for event in response.text.split("\n\n") if event]
    assert events[-1] == "data: [DONE]"
    assert all(event.startswith("data: {") for event in events[:-1])


async def test_two_concurrent_requests_both_succeed(local_daemon: Daemon) -> None:
    client = local_daemon.async_openai_client()
    first, second = await asyncio.gather(
        client.chat.completions.create(model="default", messages=QUESTION, max_tokens=8),
        client.chat.completions.create(model="smollm2", messages=QUESTION, max_tokens=8, stream=False),
    )
    assert first.choices[0].message.content
    assert second.choices[0].message.content
    assert first.usage is not None and first.usage.completion_tokens > 0
    assert second.usage is not None and second.usage.completion_tokens > 0


def test_models_lists_routes_and_deployments(local_daemon: Daemon) -> None:
    ids = [model.id for model in local_daemon.openai_client().models.list()]
    assert "default" in ids
    assert "smollm2" in ids


def test_healthz_reports_serving(local_daemon: Daemon) -> None:
    with local_daemon.http() as http:
        response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "state": "serving"}


def test_request_id_is_echoed(local_daemon: Daemon) -> None:
    with local_daemon.http() as http:
        response = http.post(
            "/v1/chat/completions", json={"model": "default", "messages": QUESTION, "max_tokens": 2},
            headers={"x-request-id": "trace-123"},
        )
    assert response.headers["x-request-id"] == "trace-123"


@pytest.mark.parametrize("stream", [False, True])
def test_prompt_longer_than_context_is_400(local_daemon: Daemon, stream: bool) -> None:
    client = local_daemon.openai_client()
    long_prompt = [{"role": "user", "content": "word " * 3000}]  # the test daemon's context is 2048
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model="default", messages=long_prompt, stream=stream)
    assert caught.value.status_code == 400
    assert caught.value.code == "context_length_exceeded"
    assert "2048" in caught.value.message



def test_local_embeddings_float_and_base64(spawn_daemon: SpawnDaemon) -> None:
    embedder = f'  embedder: {{provider: local, path: "{LOCAL_MODEL}", context: 512, embedding: true}}\n'
    daemon = spawn_daemon(local_config().replace("routes:\n", embedder + "routes:\n"))
    client = daemon.openai_client()
    as_float = client.embeddings.create(model="embedder", input=["hello world", "bonjour"], encoding_format="float")
    as_base64 = client.embeddings.create(model="embedder", input=["hello world", "bonjour"])  # the SDK asks for base64
    assert len(as_float.data) == 2
    assert len(as_float.data[0].embedding) > 100
    assert as_float.usage.prompt_tokens > 0
    assert as_base64.data[0].embedding == pytest.approx(as_float.data[0].embedding, rel=1e-5)


def test_embeddings_on_chat_deployment_is_400(local_daemon: Daemon) -> None:
    with pytest.raises(openai.BadRequestError) as caught:
        local_daemon.openai_client().embeddings.create(model="smollm2", input="hello")
    assert "embedding: true" in caught.value.message
