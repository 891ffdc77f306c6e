"""Reload bridge.yaml and its included files while the daemon serves.

A reload is triggered by a change to a watched file, by SIGHUP or by `bridgectl reload`
(POST /admin/reload). Reloads run one at a time, and triggers that arrive during one are
coalesced into a single follow-up reload. Each reload loads, validates and compiles the whole
config. The runtime then prepares adapters and local models before it swaps the graph, so any
failure leaves the old graph in service; the failure is reported with file and line.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from watchfiles import Change, awatch

from sage_bridge.config.loader import LoadedConfig, load_config
from sage_bridge.errors import ConfigError
from sage_bridge.graph.compiler import compile_graph
from sage_bridge.graph.diff import GraphDiff, diff_graphs
from sage_bridge.graph.model import RoutingGraph
from sage_bridge.providers.pool import PrepareFailed
from sage_bridge.runtime import DaemonState, Runtime

log = logging.getLogger(__name__)

Outcome = Literal["accepted", "rejected", "unchanged"]

QUIET_SECONDS = 0.25  # a save by truncate-and-write is two changes a few milliseconds apart
MAX_DELAY_SECONDS = 2.0  # a file rewritten without pause still reloads this long after the first change
WATCH_RETRY_SECONDS = 5.0
# server: settings that are read only when the daemon starts; max_body_bytes is read per request.
_RESTART_ONLY_SERVER_KEYS = ("socket", "socket_mode", "state_dir", "log_level", "shutdown_grace_seconds", "ledger_sync")


@dataclass(frozen=True, slots=True)
class ReloadReport:
    outcome: Outcome
    trigger: str  # what asked for the reload: "file change", "SIGHUP", "bridgectl reload"
    sha256: str | None = None  # digest of the files read; None when they could not be loaded
    errors: tuple[str, ...] = ()  # each starts with "file:line: key.path:" when the position is known
    warnings: tuple[str, ...] = ()
    diff: GraphDiff = GraphDiff()
    at: float = field(default_factory=time.time)  # Unix time the reload finished

    def to_json(self) -> dict[str, Any]:
        return {
            "outcome": self.outcome,
            "trigger": self.trigger,
            "at": self.at,
            "sha256": self.sha256,
            "errors": list(self.errors),
            "warnings": list(self.warnings),
            **self.diff.to_json(),
        }


class Debouncer:
    """Turn a burst of change events into one action, due `quiet` seconds after the latest event
    but no later than `max_delay` seconds after the first. Time comes from `clock` (seconds)."""

    __slots__ = ("quiet", "max_delay", "_clock", "_first", "_latest")

    def __init__(self, quiet: float, max_delay: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.quiet = quiet
        self.max_delay = max_delay
        self._clock = clock
        self._first: float | None = None
        self._latest = 0.0

    @property
    def pending(self) -> bool:
        return self._first is not None

    def record(self) -> None:
        now = self._clock()
        if self._first is None:
            self._first = now
        self._latest = now

    def remaining(self) -> float:
        """Return the seconds until the action is due; 0 when it is due or nothing is pending."""
        if self._first is None:
            return 0.0
        due = min(self._latest + self.quiet, self._first + self.max_delay)
        return max(0.0, due - self._clock())

    def reset(self) -> None:
        self._first = None


class ConfigWatcher:
    """Call `on_change` once per burst of changes to any of a set of files.

    The parent directories are watched, not the files: an editor that saves by writing a
    temporary file and renaming it over the original replaces the inode a file watch would
    follow. Events are filtered by path.
    """

    def __init__(self, files: Iterable[Path], on_change: Callable[[], object], debouncer: Debouncer | None = None) -> None:
        self._files = frozenset(files)
        self._on_change = on_change
        self._debouncer = debouncer or Debouncer(QUIET_SECONDS, MAX_DELAY_SECONDS)
        self._changed = asyncio.Event()
        self._restart = asyncio.Event()  # stops the current awatch, to watch another set of directories
        self._closing = False
        self._tasks: list[asyncio.Task[None]] = []

    @property
    def files(self) -> frozenset[Path]:
        return self._files

    def watch_files(self, files: Iterable[Path]) -> None:
        """Replace the set of watched files; a new parent directory restarts the watch."""
        previous_directories = self._directories()
        self._files = frozenset(files)
        if self._directories() != previous_directories:
            self._restart.set()

    def start(self) -> None:
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._watch()), loop.create_task(self._debounce())]

    async def close(self) -> None:
        self._closing = True
        self._restart.set()  # awatch checks it between steps and returns
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _directories(self) -> frozenset[Path]:
        return frozenset(file.parent for file in self._files)

    def _accepts(self, _change: Change, path: str) -> bool:
        return Path(path) in self._files

    async def _watch(self) -> None:
        while not self._closing:
            self._restart = asyncio.Event()
            directories = sorted(directory for directory in self._directories() if directory.is_dir())
            log.debug("watching %s in %s", ", ".join(sorted(str(f) for f in self._files)), ", ".join(map(str, directories)))
            try:
                async for _changes in awatch(*directories, watch_filter=self._accepts, stop_event=self._restart, recursive=False):
                    self._debouncer.record()
                    self._changed.set()
            except (OSError, RuntimeError) as exc:
                log.error("watching the config files failed: %s; retrying in %.0f s (SIGHUP or `bridgectl reload` "
                          "still reload)", exc, WATCH_RETRY_SECONDS)
                await asyncio.sleep(WATCH_RETRY_SECONDS)

    async def _debounce(self) -> None:
        while True:
            await self._changed.wait()
            while (delay := self._debouncer.remaining()) > 0:
                await asyncio.sleep(delay)
            self._changed.clear()
            self._debouncer.reset()
            self._on_change()


class ReloadCoordinator:
    """Run reloads one at a time and keep the latest outcome for `bridgectl status`."""

    def __init__(self, runtime: Runtime, config_path: Path, debouncer: Debouncer | None = None) -> None:
        self._runtime = runtime
        self._config_path = config_path.absolute()
        self.last: ReloadReport | None = None
        self._wakeup = asyncio.Event()
        self._waiters: list[asyncio.Future[ReloadReport]] = []
        self._triggers: list[str] = []
        self._worker: asyncio.Task[None] | None = None
        files = self._loaded_files(runtime.graph.loaded)
        self._watcher = ConfigWatcher(files, lambda: self.request("file change"), debouncer)

    def watch(self) -> None:
        """Start watching the config files. Changes seen before `start` wait for it."""
        self._watcher.start()

    def start(self) -> None:
        """Start running reloads; call once the daemon serves."""
        self._worker = asyncio.get_running_loop().create_task(self._work())

    def request(self, trigger: str) -> asyncio.Future[ReloadReport]:
        """Ask for a reload; the future gets the outcome of the first reload that starts after now."""
        future: asyncio.Future[ReloadReport] = asyncio.get_running_loop().create_future()
        self._waiters.append(future)
        self._triggers.append(trigger)
        self._wakeup.set()
        return future

    async def close(self) -> None:
        """Stop watching and cancel a reload in progress; the graph in service stays."""
        await self._watcher.close()
        if self._worker is not None:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)
        for future in self._waiters:
            future.cancel()

    async def _work(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            waiters, self._waiters = self._waiters, []
            trigger = ", ".join(dict.fromkeys(self._triggers))
            self._triggers = []
            try:
                report = await self._reload_once(trigger)
            except Exception as exc:  # a bug in one reload must not end reloading for the daemon's life
                log.exception("reload (%s) failed unexpectedly; the config in service stays", trigger)
                report = ReloadReport("rejected", trigger, errors=(f"internal error: {exc!r}; the log has the details",))
                self.last = report
            for future in waiters:
                if not future.done():
                    future.set_result(report)

    async def _reload_once(self, trigger: str) -> ReloadReport:
        """Load, validate and compile the config, adopt it if it is valid and new, and record
        the outcome. The caller makes sure only one reload runs at a time."""
        runtime = self._runtime
        if runtime.state is not DaemonState.SERVING:
            return ReloadReport("rejected", trigger, errors=(f"bridged is {runtime.state.value}; it reloads only while serving",))
        with runtime.reloading():
            report = await self._load_and_adopt(trigger)
        self._record(report)
        runtime.reload_observed(report.outcome)
        return report

    async def _load_and_adopt(self, trigger: str) -> ReloadReport:
        current = self._runtime.graph
        try:
            graph = await asyncio.to_thread(_load_and_compile, self._config_path)
        except ConfigError as exc:
            self._watcher.watch_files(self._watcher.files | _declared_files(self._config_path))
            return ReloadReport("rejected", trigger, errors=tuple(exc.problems))
        self._watcher.watch_files(self._loaded_files(graph.loaded))
        digest = graph.loaded.digest
        if digest == current.loaded.digest:
            return ReloadReport("unchanged", trigger, digest)

        diff = diff_graphs(current, graph)
        try:
            await self._runtime.adopt(graph)
        except PrepareFailed as exc:
            return ReloadReport("rejected", trigger, digest, errors=(f"{graph.loaded.where(('models', exc.deployment))}: {exc}",))
        except ValueError as exc:  # a budget window the budget book cannot build
            return ReloadReport("rejected", trigger, digest, errors=(str(exc),))
        return ReloadReport("accepted", trigger, digest, warnings=(*graph.warnings, *_restart_notes(current, graph)), diff=diff)

    def _record(self, report: ReloadReport) -> None:
        serving = self._runtime.graph.loaded.digest[:12]
        if report.outcome == "unchanged":
            log.debug("reload (%s): the config is unchanged (sha256 %s)", report.trigger, serving)
            # A config that was rejected and then restored is valid again, so its error goes.
            if self.last is not None and self.last.outcome == "rejected":
                self.last = report
            return
        self.last = report
        if report.outcome == "rejected":
            log.error("reload (%s) rejected; still serving the config with sha256 %s:\n  %s",
                      report.trigger, serving, "\n  ".join(report.errors))
            return
        log.info("reload (%s) accepted: now serving the config with sha256 %s; %s", report.trigger, serving, report.diff.summary())
        for warning in report.warnings:
            log.warning("%s", warning)

    def _loaded_files(self, loaded: LoadedConfig) -> set[Path]:
        # The path as given is watched too, so a symlink pointed at another file is seen.
        return {*loaded.files, self._config_path}


def _load_and_compile(path: Path) -> RoutingGraph:
    try:
        return compile_graph(load_config(path))
    except OSError as exc:  # a file removed between its parse and the digest of its bytes
        raise ConfigError([f"{exc.filename or path}: cannot read the file: {exc.strerror}"]) from exc


def _declared_files(config_path: Path) -> set[Path]:
    """Return the main file and the files its include: list names, read without validation.

    Used after a rejected reload, so that fixing a newly included file reloads too.
    """
    files = {config_path}
    with contextlib.suppress(OSError, UnicodeDecodeError, yaml.YAMLError):
        data = yaml.safe_load(config_path.read_text(encoding="utf-8"))
        includes = data.get("include") if isinstance(data, dict) else None
        if isinstance(includes, list):
            base = config_path.resolve().parent
            files.update((base / str(entry)).resolve() for entry in includes)
    return files


def _restart_notes(current: RoutingGraph, new: RoutingGraph) -> list[str]:
    old_server, new_server = current.loaded.config.server, new.loaded.config.server
    changed = [key for key in _RESTART_ONLY_SERVER_KEYS if getattr(old_server, key) != getattr(new_server, key)]
    if not changed:
        return []
    keys = ", ".join(f"server.{key}" for key in changed)
    return [f"{keys} changed; the new value takes effect when bridged restarts"]
