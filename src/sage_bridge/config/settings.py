"""Daemon settings: command-line flags, then SAGE_BRIDGE_* variables, then bridge.yaml, then defaults."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from sage_bridge.config.schema import ServerConfig

LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


def default_config_path() -> Path:
    """./bridge.yaml when it exists, else $XDG_CONFIG_HOME/sage-bridge/bridge.yaml."""
    local = Path("bridge.yaml")
    if local.is_file():
        return local
    config_home = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return config_home / "sage-bridge" / "bridge.yaml"


def default_socket_path() -> Path:
    """$XDG_RUNTIME_DIR/sage-bridge/bridge.sock, else a per-user directory under the temp dir."""
    runtime_dir = os.environ.get("XDG_RUNTIME_DIR")
    if runtime_dir:
        return Path(runtime_dir) / "sage-bridge" / "bridge.sock"
    return Path(tempfile.gettempdir()) / f"sage-bridge-{os.getuid()}" / "bridge.sock"


def default_state_dir() -> Path:
    state_home = Path(os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state")
    return state_home / "sage-bridge"


def socket_from_environment(flag: str | None) -> Path:
    """Return the socket bridgectl connects to: --socket, then SAGE_BRIDGE_SOCKET, then the default."""
    return Path(flag or os.environ.get("SAGE_BRIDGE_SOCKET") or default_socket_path())


class _YamlServerSource(PydanticBaseSettingsSource):
    """Supplies values from bridge.yaml's `server:` section, below flags and environment."""

    def __init__(self, settings_cls: type[BaseSettings], server: ServerConfig | None) -> None:
        super().__init__(settings_cls)
        self.server = server

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if self.server is None:
            return {}
        values = {"socket": self.server.socket, "state_dir": self.server.state_dir, "log_level": self.server.log_level}
        return {key: value for key, value in values.items() if value is not None}


class DaemonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SAGE_BRIDGE_", extra="ignore")

    config: Path = Path("bridge.yaml")
    socket: Path | None = None
    state_dir: Path | None = None
    log_level: LogLevel = "INFO"
    log_format: Literal["text", "json"] = "text"

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    @property
    def socket_path(self) -> Path:
        return self.socket or default_socket_path()

    @property
    def state_path(self) -> Path:
        return self.state_dir or default_state_dir()


def resolve_settings(flags: dict[str, Any], server: ServerConfig | None) -> DaemonSettings:
    """Merge flags (highest), SAGE_BRIDGE_* variables, then the config's server section (lowest)."""

    class _Settings(DaemonSettings):
        @classmethod
        def settings_customise_sources(
            cls,
            settings_cls: type[BaseSettings],
            init_settings: PydanticBaseSettingsSource,
            env_settings: PydanticBaseSettingsSource,
            dotenv_settings: PydanticBaseSettingsSource,
            file_secret_settings: PydanticBaseSettingsSource,
        ) -> tuple[PydanticBaseSettingsSource, ...]:
            return (init_settings, env_settings, _YamlServerSource(settings_cls, server))

    return _Settings(**{key: value for key, value in flags.items() if value is not None})


def config_path_from(flags: dict[str, Any]) -> Path:
    """Return the config file: --config, then SAGE_BRIDGE_CONFIG, then the default location."""
    value = flags.get("config") or os.environ.get("SAGE_BRIDGE_CONFIG")
    return Path(value) if value else default_config_path()
