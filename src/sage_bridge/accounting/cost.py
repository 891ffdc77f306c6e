"""Compute request cost in exact decimal USD, and estimate prompt tokens before a call.

Prices are USD per 1M tokens (config.schema.PriceConfig). Every total is a Decimal computed in
a context that raises on any rounding, so a cost is exact or an error, never a float.
"""

from __future__ import annotations

import decimal
import json
import logging
from decimal import Decimal

from sage_bridge.config.schema import PriceConfig
from sage_bridge.types import ChatRequest, EmbeddingRequest, ImagePart, Message, Usage

logger = logging.getLogger(__name__)

TOKENS_PER_PRICE_UNIT = Decimal(1_000_000)

# Sixty digits hold any token count times any configured price; Inexact turns a silent
# rounding into an error instead of a wrong total.
_EXACT = decimal.Context(prec=60, traps=[decimal.Inexact, decimal.InvalidOperation, decimal.Overflow])

# Prompt estimate constants. Chat formats wrap each message in a few special tokens, and
# OpenAI charges about 1105 tokens for a high-detail 1024x1024 image (85 + 6 tiles of 170).
MESSAGE_OVERHEAD_TOKENS = 4
REQUEST_OVERHEAD_TOKENS = 3
IMAGE_TOKENS = 1105


def chat_cost(usage: Usage, price: PriceConfig | None) -> Decimal | None:
    """Return the USD cost of a chat completion, or None when the deployment is unpriced.

    `usage.prompt_tokens` counts every input token; the cached and cache-write subsets are
    charged at their own prices and the rest at the input price.
    """
    if price is None:
        return None
    cached = usage.cached_tokens
    written = usage.cache_write_tokens
    uncached = usage.prompt_tokens - cached - written
    if uncached < 0:
        # The adapter reported more cache tokens than prompt tokens; charge what was reported.
        logger.warning(
            "usage has %d cached and %d cache-write tokens but only %d prompt tokens; "
            "charging no uncached input",
            cached,
            written,
            usage.prompt_tokens,
        )
        uncached = 0

    with decimal.localcontext(_EXACT):
        total = (
            uncached * price.input
            + cached * _or_input(price.cached_input, price)
            + written * _or_input(price.cache_write, price)
            + usage.completion_tokens * price.output
        )
        return total / TOKENS_PER_PRICE_UNIT


def embedding_cost(usage: Usage, price: PriceConfig | None) -> Decimal | None:
    """Return the USD cost of an embeddings call: input tokens only, or None when unpriced."""
    if price is None:
        return None
    with decimal.localcontext(_EXACT):
        return usage.prompt_tokens * price.input / TOKENS_PER_PRICE_UNIT


def worst_case_cost(price: PriceConfig | None, prompt_tokens: int, max_output_tokens: int | None) -> Decimal | None:
    """Return the most a call can cost, for budget admission, or None when it has no bound.

    Prompt tokens are charged at the dearer of the input and cache-write prices, because
    writing the prompt to a cache costs more than reading it. A call without an output cap
    has no bound unless output is free.
    """
    if price is None:
        return None
    if max_output_tokens is None and price.output > 0:
        return None
    prompt_price = max(price.input, _or_input(price.cache_write, price))
    with decimal.localcontext(_EXACT):
        total = prompt_tokens * prompt_price + (max_output_tokens or 0) * price.output
        return total / TOKENS_PER_PRICE_UNIT


def format_usd(amount: Decimal) -> str:
    """Render an amount in plain notation without trailing zeros, e.g. "0.005615"."""
    text = format(amount, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def estimate_text_tokens(text: str) -> int:
    """Estimate the tokens of a text without a tokenizer.

    This is an estimate: about four ASCII characters make a token in English, and each other
    character counts as a whole token, which keeps CJK text and emoji from being undercounted.
    """
    ascii_chars = len(text.encode("ascii", "ignore"))
    other_chars = len(text) - ascii_chars
    return -(-ascii_chars // 4) + other_chars


def estimate_prompt_tokens(request: ChatRequest) -> int:
    """Estimate the prompt tokens of a chat request, for budgets, limits and routing.

    An estimate from characters, not a tokenizer count: real counts can be higher, and the
    ledger records the provider's count once the response arrives.
    """
    tokens = REQUEST_OVERHEAD_TOKENS
    for message in request.messages:
        tokens += _estimate_message_tokens(message)
    if request.tools:
        tools = [tool.model_dump(exclude_none=True) for tool in request.tools]
        tokens += estimate_text_tokens(json.dumps(tools, separators=(",", ":")))
    if request.response_format:
        tokens += estimate_text_tokens(json.dumps(request.response_format, separators=(",", ":")))
    return tokens


def estimate_embedding_tokens(request: EmbeddingRequest) -> int:
    """Estimate the input tokens of an embeddings request; token-id inputs are counted exactly."""
    if isinstance(request.input, str):
        return estimate_text_tokens(request.input)
    tokens = 0
    for item in request.input:
        if isinstance(item, str):
            tokens += estimate_text_tokens(item)
        elif isinstance(item, int):
            tokens += 1
        else:
            tokens += len(item)
    return tokens


def _estimate_message_tokens(message: Message) -> int:
    tokens = MESSAGE_OVERHEAD_TOKENS + estimate_text_tokens(message.text())
    if isinstance(message.content, list):
        tokens += IMAGE_TOKENS * sum(1 for part in message.content if isinstance(part, ImagePart))
    if message.name:
        tokens += estimate_text_tokens(message.name)
    for call in message.tool_calls or ():
        tokens += estimate_text_tokens(call.function.name) + estimate_text_tokens(call.function.arguments)
    return tokens


def _or_input(specific: Decimal | None, price: PriceConfig) -> Decimal:
    return price.input if specific is None else specific
