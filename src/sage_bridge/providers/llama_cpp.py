"""The `llama_cpp` provider: local GGUF models run by llama-cpp-python, the terminal fallback."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Hashable
from typing import Any, cast

from sage_bridge.config.schema import DeploymentConfig, LlamaCppProviderConfig
from sage_bridge.errors import InvalidRequest, UnsupportedParameter
from sage_bridge.providers.base import Provider
from sage_bridge.providers.local_model import LocalModel, Piece, SamplingParams
from sage_bridge.types import (
    ChatRequest,
    ChatResult,
    EmbeddingRequest,
    EmbeddingResult,
    FinishReason,
    Message,
    StreamEvent,
    Usage,
)

log = logging.getLogger(__name__)

# Used when neither the request nor the deployment's `defaults:` set them: llama-cpp-python's
# own defaults, because OpenAI's temperature of 1.0 makes small local models ramble.
DEFAULT_TEMPERATURE = 0.2
DEFAULT_TOP_P = 0.95


def _model_key(deployment: DeploymentConfig) -> tuple[str, int | None, bool]:
    return (deployment.path or "", deployment.context, deployment.embedding)


class LlamaCppProvider(Provider):
    type_name = "llama_cpp"
    remote = False

    def __init__(self, name: str, config: LlamaCppProviderConfig) -> None:
        super().__init__(name, config)
        self._models: dict[tuple[str, int | None, bool], LocalModel] = {}

    async def prepare(self, deployment: DeploymentConfig) -> None:
        key = _model_key(deployment)
        if key not in self._models:
            self._models[key] = await LocalModel.load(key[0], deployment.context, self.config.threads, deployment.embedding)

    def release(self, deployment: DeploymentConfig) -> None:
        model = self._models.pop(_model_key(deployment), None)
        if model is not None:
            model.close()

    def resource_key(self, deployment: DeploymentConfig) -> Hashable:
        return _model_key(deployment)

    async def aclose(self) -> None:
        for model in self._models.values():
            model.close()
        self._models.clear()

    async def chat(self, request: ChatRequest, deployment: DeploymentConfig) -> ChatResult:
        parts: list[str] = []
        finish: FinishReason = "stop"
        usage = Usage()
        async for event in self.stream_chat(request, deployment):
            if event.content:
                parts.append(event.content)
            if event.finish_reason is not None:
                finish = event.finish_reason
            if event.usage is not None:
                usage = event.usage
        return ChatResult(content="".join(parts), finish_reason=finish, usage=usage, upstream_model=self._model_name(deployment))

    async def embed(self, request: EmbeddingRequest, deployment: DeploymentConfig) -> EmbeddingResult:
        if not deployment.embedding:
            raise InvalidRequest(
                f"this local deployment ({self._model_name(deployment)}) is loaded for chat; send embeddings to a "
                "llama_cpp deployment with embedding: true",
                param="model",
            )
        try:
            texts = request.texts()
        except TypeError:
            raise InvalidRequest("the local model takes text input; send strings, not token ids", param="input") from None
        vectors, tokens = await (await self._model(deployment)).embed(texts)
        return EmbeddingResult(vectors=vectors, usage=Usage(prompt_tokens=tokens), upstream_model=self._model_name(deployment))

    async def stream_chat(self, request: ChatRequest, deployment: DeploymentConfig) -> AsyncIterator[StreamEvent]:
        if deployment.embedding:
            raise InvalidRequest("this deployment is loaded for embeddings; send chat requests to a chat deployment", param="model")
        model = await self._model(deployment)
        params = self._sampling(request, deployment)
        messages = [_template_message(message) for message in request.messages]
        prompt_tokens = 0
        generation = model.generate(messages, params)
        try:
            async for item in generation:
                if isinstance(item, int):
                    prompt_tokens = item
                elif item.finish_reason is None:
                    yield StreamEvent(content=item.text)
                else:
                    yield StreamEvent(finish_reason=cast(FinishReason, item.finish_reason))
                    yield StreamEvent(usage=_usage(prompt_tokens, item))
        finally:
            await generation.aclose()

    async def _model(self, deployment: DeploymentConfig) -> LocalModel:
        model = self._models.get(_model_key(deployment))
        if model is None:
            await self.prepare(deployment)
            model = self._models[_model_key(deployment)]
        return model

    def _model_name(self, deployment: DeploymentConfig) -> str:
        return deployment.model or (deployment.path or "").rsplit("/", 1)[-1]

    def _sampling(self, request: ChatRequest, deployment: DeploymentConfig) -> SamplingParams:
        self._check_supported(request, deployment)
        return SamplingParams(
            max_tokens=request.output_limit or deployment.max_tokens,
            temperature=_first(request.temperature, deployment.defaults.temperature, DEFAULT_TEMPERATURE),
            top_p=_first(request.top_p, deployment.defaults.top_p, DEFAULT_TOP_P),
            stop=request.stop_list,
            seed=request.seed,
        )

    def _check_supported(self, request: ChatRequest, deployment: DeploymentConfig) -> None:
        unsupported = [name for name in ("tools", "response_format") if getattr(request, name)]
        if request.n not in (None, 1):
            unsupported.append("n")
        unsupported += sorted(request.extra_params)
        if not unsupported:
            return
        if deployment.unsupported_params == "drop":
            log.debug("dropping parameters the local model does not support: %s", ", ".join(unsupported))
            return
        raise UnsupportedParameter(
            f"the local model {self._model_name(deployment)} does not support these parameters: "
            f"{', '.join(unsupported)}. Remove them (and check the spelling of any that OpenAI does not "
            "define), or set unsupported_params: drop on the deployment to have the bridge leave them out",
            param=unsupported[0],
        )


def _first(*values: float | None) -> float:
    return next(value for value in values if value is not None)


def _template_message(message: Message) -> dict[str, Any]:
    # Chat templates know system, user and assistant; developer instructions act as system ones.
    role = "system" if message.role == "developer" else message.role
    return {"role": role, "content": message.text()}


def _usage(prompt_tokens: int, end: Piece) -> Usage:
    return Usage(prompt_tokens=prompt_tokens, completion_tokens=end.completion_tokens)
