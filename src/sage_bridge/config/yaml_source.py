"""Read YAML into plain Python values while remembering the file and line of every key path.

The positions let a schema or compiler error say `bridge.yaml:14: models.gpt.rpm: ...`
instead of pointing at nothing.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

KeyPath = tuple[str | int, ...]

# ${VAR} or ${VAR:-default}; $${...} is a literal "${...}".
_ENV_REFERENCE = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@dataclass(frozen=True, slots=True)
class Position:
    file: Path
    line: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(slots=True)
class PositionMap:
    """Key path -> where it was written. Lookups fall back to the nearest enclosing path."""

    entries: dict[KeyPath, Position] = field(default_factory=dict)
    env_names: dict[KeyPath, list[str]] = field(default_factory=dict)  # ${VAR} names read per value

    def find(self, path: KeyPath) -> Position | None:
        for end in range(len(path), -1, -1):
            position = self.entries.get(path[:end])
            if position is not None:
                return position
        return None


def format_path(path: KeyPath) -> str:
    """Render ('routes', 'chat', 'targets', 2) as routes.chat.targets[2]."""
    text = ""
    for part in path:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


class YamlProblem(Exception):
    """A YAML file could not be read; the message names the file and line."""


def load_yaml_file(path: Path, positions: PositionMap, environ: dict[str, str] | None = None) -> Any:
    """Parse `path`, interpolate ${VAR} references and record every key's position."""
    env = os.environ if environ is None else environ
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise YamlProblem(f"{path}: cannot read the file: {exc.strerror}") from exc
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        raise YamlProblem(f"{path}{line}: invalid YAML: {getattr(exc, 'problem', exc)}") from exc
    if node is None:
        return {}
    return _NodeReader(path, positions, env).read(node, ())


class _NodeReader:
    def __init__(self, path: Path, positions: PositionMap, env: Any) -> None:
        self.path = path
        self.positions = positions
        self.env = env
        self.constructor = yaml.SafeLoader("")

    def read(self, node: yaml.Node, path: KeyPath) -> Any:
        self.positions.entries.setdefault(path, Position(self.path, node.start_mark.line + 1))
        if isinstance(node, yaml.MappingNode):
            return self._read_mapping(node, path)
        if isinstance(node, yaml.SequenceNode):
            return [self.read(item, (*path, index)) for index, item in enumerate(node.value)]
        value = self.constructor.construct_object(node)
        if isinstance(value, str):
            return self._interpolate(value, path, node)
        return value

    def _read_mapping(self, node: yaml.MappingNode, path: KeyPath) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = str(self.constructor.construct_object(key_node))
            if key in result:
                raise YamlProblem(
                    f"{self.path}:{key_node.start_mark.line + 1}: {format_path((*path, key))}: "
                    "duplicate key; remove one of the two entries"
                )
            self.positions.entries[(*path, key)] = Position(self.path, key_node.start_mark.line + 1)
            result[key] = self.read(value_node, (*path, key))
        return result

    def _interpolate(self, value: str, path: KeyPath, node: yaml.Node) -> str:
        def substitute(match: re.Match[str]) -> str:
            escaped, name, default = match.groups()
            if escaped:
                return match.group(0)[1:]
            self.positions.env_names.setdefault(path, []).append(name)
            if name in self.env:
                return str(self.env[name])
            if default is not None:
                return default
            raise YamlProblem(
                f"{self.path}:{node.start_mark.line + 1}: {format_path(path)}: environment variable "
                f"{name} is not set; set it, or write ${{{name}:-}} to default to an empty value"
            )

        return _ENV_REFERENCE.sub(substitute, value)
