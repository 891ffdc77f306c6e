"""Load bridge.yaml: read it and its includes, merge them, and validate against the schema."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from sage_bridge.config.schema import BridgeConfig
from sage_bridge.config.yaml_source import KeyPath, PositionMap, YamlProblem, format_path, load_yaml_file
from sage_bridge.errors import ConfigError
from sage_bridge.secrets import register_secret


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    config: BridgeConfig
    path: Path
    files: tuple[Path, ...]  # the main file first, then every included file
    positions: PositionMap
    digest: str  # SHA-256 of the files' bytes, to tell one config version from another

    def where(self, path: KeyPath) -> str:
        """Return "file:line: key.path" for use at the start of a problem message."""
        position = self.positions.find(path)
        prefix = f"{position}: " if position is not None else f"{self.path}: "
        return prefix + format_path(path) if path else prefix.rstrip(": ")


def load_config(path: Path, environ: dict[str, str] | None = None) -> LoadedConfig:
    """Read, merge and validate the config at `path`; raise ConfigError listing every problem."""
    path = path.resolve()
    positions = PositionMap()
    try:
        data, files = _read_with_includes(path, positions, environ)
    except YamlProblem as exc:
        raise ConfigError([str(exc)]) from exc
    try:
        config = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_describe_validation_errors(exc, positions, path)) from exc
    _register_keys(config)
    return LoadedConfig(config, path, tuple(files), positions, _digest(files))


def _read_with_includes(
    path: Path, positions: PositionMap, environ: dict[str, str] | None
) -> tuple[dict[str, Any], list[Path]]:
    data = load_yaml_file(path, positions, environ)
    if not isinstance(data, dict):
        raise YamlProblem(f"{path}:1: the top level must be a mapping of sections such as version, routes")
    files = [path]
    includes = data.get("include", [])
    if not isinstance(includes, list):
        raise YamlProblem(f"{positions.find(('include',))}: include: expected a list of file paths")
    for index, entry in enumerate(includes):
        included = (path.parent / str(entry)).resolve()
        if not included.is_file():
            raise YamlProblem(
                f"{positions.find(('include', index))}: include[{index}]: file {included} not found; "
                "paths are relative to the including file"
            )
        # Positions of included keys are recorded under their own file; the main file's win.
        included_positions = PositionMap()
        extra = load_yaml_file(included, included_positions, environ)
        if not isinstance(extra, dict):
            raise YamlProblem(f"{included}:1: an included file must be a mapping of sections")
        if "include" in extra:
            raise YamlProblem(f"{included}:1: include: included files cannot include further files")
        for key_path, position in included_positions.entries.items():
            positions.entries.setdefault(key_path, position)
        for key_path, names in included_positions.env_names.items():
            positions.env_names.setdefault(key_path, names)
        data = _merge(extra, data)
        files.append(included)
    return data, files


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Merge two top-level section maps: named entries merge by name, lists concatenate, and on
    a clash the overriding (including) file wins."""
    merged = dict(base)
    for key, value in override.items():
        existing = merged.get(key)
        if isinstance(existing, dict) and isinstance(value, dict):
            merged[key] = {**existing, **value}
        elif isinstance(existing, list) and isinstance(value, list) and key != "include":
            merged[key] = existing + value
        else:
            merged[key] = value
    return merged


def _describe_validation_errors(exc: ValidationError, positions: PositionMap, path: Path) -> list[str]:
    problems = []
    for error in exc.errors():
        key_path = _schema_path(error["loc"])
        position = positions.find(key_path)
        where = str(position) if position is not None else str(path)
        message = error["msg"]
        if error["type"] == "extra_forbidden":
            message = "unknown key; check its spelling or remove it"
        elif error["type"] == "missing":
            message = "required key is missing"
        problems.append(f"{where}: {format_path(key_path) or '(top level)'}: {message}")
    return problems


def _schema_path(loc: tuple[str | int, ...]) -> KeyPath:
    # pydantic adds union member tags (the provider type, "str") to the location; drop them.
    tags = {"openai", "anthropic", "cohere", "llama_cpp"}
    cleaned: list[str | int] = []
    for index, part in enumerate(loc):
        if isinstance(part, str) and part in tags and index >= 2:
            continue
        cleaned.append(part)
    return tuple(cleaned)


def _register_keys(config: BridgeConfig) -> None:
    for provider in config.providers.values():
        key = getattr(provider, "api_key", None)
        if key is not None:
            register_secret(key.get_secret_value())


def _digest(files: list[Path]) -> str:
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.read_bytes())
    return digest.hexdigest()
