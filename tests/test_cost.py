"""Price resolution, exact cost arithmetic, worst-case bounds and prompt-token estimates."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from sage_bridge.accounting.cost import (
    IMAGE_TOKENS,
    MESSAGE_OVERHEAD_TOKENS,
    REQUEST_OVERHEAD_TOKENS,
    chat_cost,
    embedding_cost,
    estimate_embedding_tokens,
    estimate_prompt_tokens,
    estimate_text_tokens,
    format_usd,
    worst_case_cost,
)
from sage_bridge.accounting.pricing import FREE, catalogue_price, resolve_price
from sage_bridge.config.loader import load_config
from sage_bridge.config.schema import DeploymentConfig, PriceConfig
from sage_bridge.types import ChatRequest, EmbeddingRequest, Usage

PRICING_FILE = Path(__file__).resolve().parents[1] / "policies" / "pricing.yaml"

GPT_4O = PriceConfig(input=Decimal("2.50"), output=Decimal("10.00"), cached_input=Decimal("1.25"))
SONNET = PriceConfig(
    input=Decimal(3), output=Decimal(15), cached_input=Decimal("0.30"), cache_write=Decimal("3.75")
)

# (model, input, output, cached_input, cache_write) as published list prices, USD per 1M tokens.
EXPECTED_PRICES = [
    ("gpt-4o", "2.50", "10.00", "1.25", None),
    ("gpt-4o-mini", "0.15", "0.60", "0.075", None),
    ("gpt-4.1", "2.00", "8.00", "0.50", None),
    ("gpt-4.1-mini", "0.40", "1.60", "0.10", None),
    ("gpt-5", "1.25", "10.00", "0.125", None),
    ("gpt-5.1", "1.25", "10.00", "0.125", None),
    ("gpt-5-mini", "0.25", "2.00", "0.025", None),
    ("gpt-5-nano", "0.05", "0.40", "0.005", None),
    ("gpt-5.2", "1.75", "14.00", "0.175", None),
    ("gpt-5.4", "2.50", "15.00", "0.25", None),
    ("gpt-5.4-mini", "0.75", "4.50", "0.075", None),
    ("gpt-5.4-nano", "0.20", "1.25", "0.02", None),
    ("text-embedding-3-small", "0.02", "0", None, None),
    ("claude-opus-4-5", "5", "25", "0.50", "6.25"),
    ("claude-opus-4-6", "5", "25", "0.50", "6.25"),
    ("claude-opus-4-7", "5", "25", "0.50", "6.25"),
    ("claude-opus-4-1", "15", "75", "1.50", "18.75"),
    ("claude-sonnet-4-5", "3", "15", "0.30", "3.75"),
    ("claude-sonnet-4-6", "3", "15", "0.30", "3.75"),
    ("claude-haiku-4-5", "1", "5", "0.10", "1.25"),
    ("command-a-03-2025", "2.50", "10.00", None, None),
    ("command-r", "0.15", "0.60", None, None),
    ("command-r-08-2024", "0.15", "0.60", None, None),
    ("command-r-plus", "2.50", "10.00", None, None),
    ("command-r7b-12-2024", "0.0375", "0.15", None, None),
    ("embed-v4.0", "0.12", "0", None, None),
]


def _optional(text: str | None) -> Decimal | None:
    return None if text is None else Decimal(text)


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory: pytest.TempPathFactory) -> dict[str, PriceConfig]:
    config_file = tmp_path_factory.mktemp("config") / "bridge.yaml"
    config_file.write_text(f"version: 1\ninclude: [{PRICING_FILE}]\n")
    return load_config(config_file).config.pricing


# --- the price catalogue ---


@pytest.mark.parametrize(("model", "input_price", "output", "cached", "cache_write"), EXPECTED_PRICES)
def test_catalogue_matches_list_price(
    catalogue: dict[str, PriceConfig],
    model: str,
    input_price: str,
    output: str,
    cached: str | None,
    cache_write: str | None,
) -> None:
    price = catalogue[model]
    assert price.input == Decimal(input_price)
    assert price.output == Decimal(output)
    assert price.cached_input == _optional(cached)
    assert price.cache_write == _optional(cache_write)
    assert price.checked == "2026-12-04"


def test_catalogue_has_no_unexpected_models(catalogue: dict[str, PriceConfig]) -> None:
    assert sorted(catalogue) == sorted(row[0] for row in EXPECTED_PRICES)


def test_catalogue_prices_are_exact_decimals(catalogue: dict[str, PriceConfig]) -> None:
    # YAML reads the prices as floats; each must still come out as its short decimal literal.
    for model, price in catalogue.items():
        for value in (price.input, price.output, price.cached_input, price.cache_write):
            if value is not None:
                assert -value.as_tuple().exponent <= 4, f"{model}: {value}"  # type: ignore[operator]


# --- resolving a deployment's price ---


def test_inline_price_wins_over_catalogue() -> None:
    inline = PriceConfig(input=Decimal(1), output=Decimal(2))
    deployment = DeploymentConfig(provider="openai", model="gpt-4o", price=inline)
    assert resolve_price(deployment, "openai", "gpt-4o", {"gpt-4o": GPT_4O}) is inline


def test_catalogue_price_used_without_inline() -> None:
    deployment = DeploymentConfig(provider="openai", model="gpt-4o")
    assert resolve_price(deployment, "openai", "gpt-4o", {"gpt-4o": GPT_4O}) is GPT_4O


def test_unknown_model_is_unpriced() -> None:
    deployment = DeploymentConfig(provider="vllm", model="qwen3-8b")
    assert resolve_price(deployment, "openai", "qwen3-8b", {"gpt-4o": GPT_4O}) is None


def test_local_model_costs_zero() -> None:
    deployment = DeploymentConfig(provider="local", path="/models/a.gguf")
    price = resolve_price(deployment, "llama_cpp", "a.gguf", {})
    assert price is FREE
    assert chat_cost(Usage(prompt_tokens=500, completion_tokens=100), price) == 0


def test_local_model_inline_price_wins() -> None:
    inline = PriceConfig(input=Decimal("0.01"), output=Decimal("0.02"))
    deployment = DeploymentConfig(provider="local", path="/models/a.gguf", price=inline)
    assert resolve_price(deployment, "llama_cpp", "a.gguf", {}) is inline


@pytest.mark.parametrize(
    ("snapshot", "undated"),
    [("claude-haiku-4-5-20251001", "claude-haiku-4-5"), ("gpt-4o-2024-08-06", "gpt-4o")],
)
def test_dated_snapshot_uses_undated_price(snapshot: str, undated: str) -> None:
    catalogue = {"claude-haiku-4-5": SONNET, "gpt-4o": GPT_4O}
    assert catalogue_price(snapshot, catalogue) is catalogue[undated]


def test_dated_entry_preferred_over_undated() -> None:
    dated = PriceConfig(input=Decimal("0.15"), output=Decimal("0.60"))
    catalogue = {"command-r-08-2024": dated, "command-r": GPT_4O}
    assert catalogue_price("command-r-08-2024", catalogue) is dated


# --- cost of a response ---


def test_openai_cached_usage_cost_is_exact() -> None:
    usage = Usage(prompt_tokens=2006, completion_tokens=300, cached_tokens=1920)
    cost = chat_cost(usage, GPT_4O)
    assert isinstance(cost, Decimal)
    assert cost == Decimal("0.005615")
    assert format_usd(cost) == "0.005615"


def test_anthropic_cache_read_and_write_prices() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=10, cached_tokens=600, cache_write_tokens=300)
    # 100 uncached * 3 + 600 * 0.30 + 300 * 3.75 + 10 * 15 = 300 + 180 + 1125 + 150
    assert chat_cost(usage, SONNET) == Decimal("0.001755")


def test_cache_prices_fall_back_to_input() -> None:
    price = PriceConfig(input=Decimal(2), output=Decimal(8))
    usage = Usage(prompt_tokens=1000, completion_tokens=0, cached_tokens=400, cache_write_tokens=100)
    assert chat_cost(usage, price) == Decimal("0.002")


def test_unpriced_cost_is_unknown_not_zero() -> None:
    assert chat_cost(Usage(prompt_tokens=10, completion_tokens=10), None) is None
    assert embedding_cost(Usage(prompt_tokens=10), None) is None


def test_embedding_cost_counts_input_only() -> None:
    price = PriceConfig(input=Decimal("0.02"), output=Decimal(10))
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=50)
    assert embedding_cost(usage, price) == Decimal("0.02")


def test_tiny_cost_keeps_every_digit() -> None:
    price = PriceConfig(input=Decimal("0.0375"), output=Decimal("0.15"))
    assert chat_cost(Usage(prompt_tokens=1, completion_tokens=0), price) == Decimal("0.0000000375")


def test_large_counts_stay_exact() -> None:
    price = PriceConfig(input=Decimal("0.075"), output=Decimal("0.6"))
    usage = Usage(prompt_tokens=123_456_789_012, completion_tokens=987_654_321)
    expected = (Decimal(123_456_789_012) * Decimal("0.075") + Decimal(987_654_321) * Decimal("0.6")) / 10**6
    assert chat_cost(usage, price) == expected


def test_excess_cache_tokens_charge_no_uncached_input() -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=0, cached_tokens=150)
    assert chat_cost(usage, GPT_4O) == Decimal("0.0001875")


def test_format_usd_plain_notation() -> None:
    assert format_usd(Decimal("1E+1")) == "10"
    assert format_usd(Decimal("0E-10")) == "0"
    assert format_usd(Decimal("0.0009000")) == "0.0009"


# --- worst case for admission ---


def test_worst_case_input_and_max_output() -> None:
    price = PriceConfig(input=Decimal(3), output=Decimal(15))
    assert worst_case_cost(price, 100, 40) == Decimal("0.0009")


def test_worst_case_uses_dearer_cache_write() -> None:
    assert worst_case_cost(SONNET, 1000, 0) == Decimal("0.00375")


def test_worst_case_unpriced_is_unbounded() -> None:
    assert worst_case_cost(None, 100, 40) is None


def test_worst_case_without_output_cap_is_unbounded() -> None:
    assert worst_case_cost(GPT_4O, 100, None) is None


def test_worst_case_free_output_needs_no_cap() -> None:
    price = PriceConfig(input=Decimal("0.02"))
    assert worst_case_cost(price, 1000, None) == Decimal("0.00002")


def test_worst_case_covers_real_cost() -> None:
    usage = Usage(prompt_tokens=100, completion_tokens=40, cached_tokens=30, cache_write_tokens=50)
    worst = worst_case_cost(SONNET, 100, 40)
    real = chat_cost(usage, SONNET)
    assert worst is not None
    assert real is not None
    assert real <= worst


# --- prompt token estimates ---


def test_estimate_ascii_rounds_up() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abcd") == 1
    assert estimate_text_tokens("abcde") == 2


def test_estimate_counts_non_ascii_per_character() -> None:
    assert estimate_text_tokens("日本語") == 3
    assert estimate_text_tokens("abcd日本") == 3


def test_estimate_prompt_adds_message_overhead() -> None:
    request = ChatRequest.model_validate(
        {"model": "m", "messages": [{"role": "system", "content": "abcd"}, {"role": "user", "content": "abcdefgh"}]}
    )
    assert estimate_prompt_tokens(request) == REQUEST_OVERHEAD_TOKENS + 2 * MESSAGE_OVERHEAD_TOKENS + 1 + 2


def test_estimate_prompt_counts_images() -> None:
    request = ChatRequest.model_validate(
        {
            "model": "m",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "abcd"},
                        {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                    ],
                }
            ],
        }
    )
    assert estimate_prompt_tokens(request) == REQUEST_OVERHEAD_TOKENS + MESSAGE_OVERHEAD_TOKENS + 1 + IMAGE_TOKENS


def test_estimate_prompt_counts_tools_and_tool_calls() -> None:
    plain = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}
    with_tools = {
        **plain,
        "tools": [{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object"}}}],
    }
    assert estimate_prompt_tokens(ChatRequest.model_validate(with_tools)) > estimate_prompt_tokens(
        ChatRequest.model_validate(plain)
    )
    call = {
        "role": "assistant",
        "tool_calls": [{"id": "c1", "function": {"name": "get_weather", "arguments": '{"city": "Berlin"}'}}],
    }
    with_call = {"model": "m", "messages": [plain["messages"][0], call]}
    estimate = estimate_prompt_tokens(ChatRequest.model_validate(with_call))
    assert estimate > estimate_prompt_tokens(ChatRequest.model_validate(plain)) + MESSAGE_OVERHEAD_TOKENS


def test_estimate_embedding_inputs() -> None:
    assert estimate_embedding_tokens(EmbeddingRequest(model="e", input="abcdefgh")) == 2
    assert estimate_embedding_tokens(EmbeddingRequest(model="e", input=["abcd", "abcd"])) == 2
    assert estimate_embedding_tokens(EmbeddingRequest(model="e", input=[1, 2, 3])) == 3
    assert estimate_embedding_tokens(EmbeddingRequest(model="e", input=[[1, 2], [3]])) == 3
