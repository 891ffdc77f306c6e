from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.harness import Daemon, local_config


@pytest.fixture(scope="session")
def local_daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    """One daemon serving the local model, shared by the tests that only send requests."""
    daemon = Daemon(tmp_path_factory.mktemp("local-daemon"), local_config(max_body_bytes=1048576)).start()
    yield daemon
    daemon.stop()
    daemon.kill()


SpawnDaemon = Callable[..., Daemon]


@pytest.fixture
def spawn_daemon(tmp_path: Path) -> Iterator[SpawnDaemon]:
    """Build daemons for one test (started unless start=False); all are killed afterwards."""
    daemons: list[Daemon] = []

    def spawn(config_text: str, env: dict[str, str] | None = None, start: bool = True, **kwargs: Any) -> Daemon:
        workdir = tmp_path / f"daemon{len(daemons)}"
        workdir.mkdir()
        daemon = Daemon(workdir, config_text, env)
        daemons.append(daemon)
        return daemon.start(**kwargs) if start else daemon

    yield spawn
    for daemon in daemons:
        daemon.kill()
