"""Find the adapter class for a provider `type:` without importing every SDK up front.

Built-in adapters are listed by import path and loaded on first use, so a config that uses only
the local model never imports (or pays the memory of) the cloud SDKs. A new provider type is one
entry here (or a `register` call) and touches no router code.
"""

from __future__ import annotations

import importlib
from typing import Any

from sage_bridge.providers.base import Provider

_BUILTIN: dict[str, str] = {
    "llama_cpp": "sage_bridge.providers.llama_cpp:LlamaCppProvider",
    "openai": "sage_bridge.providers.openai:OpenAIProvider",
    "anthropic": "sage_bridge.providers.anthropic:AnthropicProvider",
    "cohere": "sage_bridge.providers.cohere:CohereProvider",
}
_registered: dict[str, type[Provider]] = {}


def register(cls: type[Provider]) -> type[Provider]:
    """Register an adapter class under its `type_name` (usable as a class decorator)."""
    _registered[cls.type_name] = cls
    return cls


def provider_class(type_name: str) -> type[Provider]:
    """Return the adapter class for `type_name`, importing a built-in one on first use."""
    if type_name not in _registered:
        target = _BUILTIN.get(type_name)
        if target is None:
            known = ", ".join(sorted({*_BUILTIN, *_registered}))
            raise KeyError(f'unknown provider type "{type_name}"; known types: {known}')
        module_name, _, class_name = target.partition(":")
        _registered[type_name] = getattr(importlib.import_module(module_name), class_name)
    return _registered[type_name]


def build_provider(name: str, config: Any) -> Provider:
    """Build the adapter for the provider `name` from its validated config."""
    return provider_class(config.type)(name, config)


def known_types() -> list[str]:
    return sorted({*_BUILTIN, *_registered})
