"""bridge.yaml loading: includes, ${VAR} interpolation, and errors with file, line and key path."""

from __future__ import annotations

from pathlib import Path

import pytest

from sage_bridge.config.loader import load_config
from sage_bridge.config.settings import resolve_settings
from sage_bridge.errors import ConfigError
from sage_bridge.graph.compiler import compile_graph
from tests.harness import REPO, local_config


def write(directory: Path, name: str, text: str) -> Path:
    path = directory / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def problems_of(path: Path, env: dict[str, str] | None = None) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        compile_graph(load_config(path, env or {}))
    return caught.value.problems


def test_default_bridge_yaml_runs_without_keys() -> None:
    graph = compile_graph(load_config(REPO / "bridge.yaml", {}))
    assert [t.deployment.name for t in graph.routes["default"].enabled_targets()] == ["smollm2"]
    assert any("gpt-5-mini" in warning and "no api_key" in warning for warning in graph.warnings)


def test_keys_enable_cloud_deployments() -> None:
    graph = compile_graph(load_config(REPO / "bridge.yaml", {"OPENAI_API_KEY": "sk-test-000000"}))
    assert [t.deployment.name for t in graph.routes["default"].enabled_targets()] == ["gpt-5-mini", "smollm2"]


def test_unknown_key_names_file_line_and_path(tmp_path: Path) -> None:
    text = local_config().replace("context: 2048", "context: 2048, rmp: 5")
    path = write(tmp_path, "bridge.yaml", text)
    [problem] = problems_of(path)
    line = next(number for number, row in enumerate(text.splitlines(), 1) if "rmp" in row)
    assert problem.startswith(f"{path}:{line}: models.smollm2.rmp: unknown key")


def test_wrong_type_names_path(tmp_path: Path) -> None:
    path = write(tmp_path, "bridge.yaml", local_config().replace("context: 2048", "context: lots"))
    [problem] = problems_of(path)
    assert "models.smollm2.context" in problem
    assert "integer" in problem


def test_env_interpolation_with_default(tmp_path: Path) -> None:
    text = local_config().replace("threads: 2", "threads: \"${THREADS:-3}\"")
    path = write(tmp_path, "bridge.yaml", text)
    assert load_config(path, {}).config.providers["local"].threads == 3  # type: ignore[union-attr]
    assert load_config(path, {"THREADS": "1"}).config.providers["local"].threads == 1  # type: ignore[union-attr]


def test_missing_env_variable_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bridge.yaml", local_config().replace("threads: 2", "threads: \"${NO_SUCH_VAR}\""))
    [problem] = problems_of(path)
    assert "NO_SUCH_VAR is not set" in problem
    assert problem.startswith(f"{path}:")


def test_include_merges_sections_and_reports_included_file(tmp_path: Path) -> None:
    write(tmp_path, "policies/extra.yaml", "pricing:\n  some-model: {input: 1, output: 2, bogus: 3}\n")
    path = write(tmp_path, "bridge.yaml", "include: [policies/extra.yaml]\n" + local_config())
    [problem] = problems_of(path)
    assert problem.startswith(f"{tmp_path / 'policies' / 'extra.yaml'}:2: pricing.some-model.bogus")


def test_missing_include_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bridge.yaml", "include: [policies/none.yaml]\n" + local_config())
    [problem] = problems_of(path)
    assert "not found" in problem


def test_invalid_yaml_names_line(tmp_path: Path) -> None:
    path = write(tmp_path, "bridge.yaml", "version: 1\nroutes: {default: [\n")
    [problem] = problems_of(path)
    assert problem.startswith(f"{path}:")
    assert "invalid YAML" in problem


def test_unknown_target_suggests_close_name(tmp_path: Path) -> None:
    path = write(tmp_path, "bridge.yaml", local_config().replace("targets: [smollm2]", "targets: [smollm]"))
    [problem] = problems_of(path)
    assert 'routes.default.targets[0]: unknown deployment or route "smollm" (did you mean "smollm2"?)' in problem


def test_settings_precedence_flag_env_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = write(tmp_path, "bridge.yaml", local_config(socket="/tmp/from-yaml.sock", log_level="WARNING"))
    server = load_config(path, {}).config.server
    assert resolve_settings({}, server).socket_path == Path("/tmp/from-yaml.sock")
    monkeypatch.setenv("SAGE_BRIDGE_SOCKET", "/tmp/from-env.sock")
    assert resolve_settings({}, server).socket_path == Path("/tmp/from-env.sock")
    assert resolve_settings({"socket": "/tmp/from-flag.sock"}, server).socket_path == Path("/tmp/from-flag.sock")
    assert resolve_settings({}, server).log_level == "WARNING"
