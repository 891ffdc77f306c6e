"""Resolve the price of a deployment from its inline price and the price catalogue."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal

from sage_bridge.config.schema import DeploymentConfig, PriceConfig

# Provider types that run on this machine and are never billed.
LOCAL_PROVIDER_TYPES = frozenset({"llama_cpp"})

FREE = PriceConfig(input=Decimal(0), output=Decimal(0))

# A dated snapshot name such as claude-haiku-4-5-20251001 or gpt-4o-2024-08-06.
_DATE_SUFFIX = re.compile(r"-(\d{8}|\d{4}-\d{2}-\d{2})$")


def resolve_price(
    deployment: DeploymentConfig,
    provider_type: str,
    upstream_model: str,
    catalogue: Mapping[str, PriceConfig],
) -> PriceConfig | None:
    """Return the deployment's price per 1M tokens, or None when it is unpriced.

    The inline `price:` wins, then a local model's price of 0, then the catalogue entry for the
    upstream model name.
    """
    if deployment.price is not None:
        return deployment.price
    if provider_type in LOCAL_PROVIDER_TYPES:
        return FREE
    return catalogue_price(upstream_model, catalogue)


def catalogue_price(upstream_model: str, catalogue: Mapping[str, PriceConfig]) -> PriceConfig | None:
    """Look up a model name; a dated snapshot falls back to its undated name."""
    price = catalogue.get(upstream_model)
    if price is not None:
        return price
    undated = _DATE_SUFFIX.sub("", upstream_model)
    if undated != upstream_model:
        return catalogue.get(undated)
    return None
