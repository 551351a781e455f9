"""Refreshing a model's version set while serving: the swap, and the thread that refreshes.

A scripted :class:`~modelflags.sources.poller.VersionSource` hands over ordinary registry models
(joblib files on disk), so these tests judge the mechanics alone; the MLflow source itself is
tested against a real server in ``test_mlflow_source.py``.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pytest

from modelflags.assembly import assemble
from modelflags.catalog import Catalog
from modelflags.options import GovernanceOptions, gather
from modelflags.parts import Parts
from modelflags.registry import ModelSpec, Registry
from modelflags.serving.context import to_context
from modelflags.sources.poller import VersionSources

from models import Constant
from support import Workspace


class Scripted:
    """A version source whose refreshes return what the test queued."""

    def __init__(self, name: str, start: ModelSpec) -> None:
        self.name = name
        self.interval = 3600.0
        self.first = start
        self.queue: list[ModelSpec | Exception | None] = []
        self.refreshes = 0
        self.kept: list[Collection[str]] = []
        self.closed = False

    def start(self) -> ModelSpec:
        return self.first

    def refresh(self, keep: Collection[str] = ()) -> ModelSpec | None:
        self.refreshes += 1
        self.kept.append(tuple(keep))
        item = self.queue.pop(0) if self.queue else None
        if isinstance(item, Exception):
            raise item
        return item

    def status(self) -> Any:
        return _Status(self.refreshes)

    def close(self) -> None:
        self.closed = True

    def reset_after_fork(self) -> None:
        pass


class _Status:
    def __init__(self, refreshes: int) -> None:
        self.refreshes = refreshes

    def as_dict(self) -> dict[str, Any]:
        return {"refreshes": self.refreshes}


def model(workspace: Workspace, versions: dict[str, int], **fields: Any) -> ModelSpec:
    """Model "m" with a joblib Constant(label) per version (written once per label)."""
    for version, label in versions.items():
        path = workspace.root / "artifacts" / f"m-{version}.joblib"
        if not path.exists():
            workspace.add("m", version, Constant(label))
    entry = {k: v for k, v in workspace.models["m"]["versions"].items() if k in versions}
    for version, extra in fields.pop("version_fields", {}).items():
        entry[version] = {**entry[version], **extra}
    data = {"models": {"m": {"default_version": fields.pop("default", "1"), "versions": entry}}}
    registry = Registry.from_mapping(data, base_dir=workspace.root)
    return registry.models["m"]


def wired(
    workspace: Workspace, start: ModelSpec, set_flags: Callable[..., None], **options: Any
) -> tuple[Parts, Scripted, Catalog, VersionSources]:
    registry = Registry(models={"m": start})
    parts = assemble(registry, gather({}, prewarm=False, **options))
    catalog = Catalog(
        parts.registry,
        parts.keeper.specs,  # type: ignore[arg-type]
        parts.policy.models,  # type: ignore[arg-type]
        parts.policy.stages,  # type: ignore[arg-type]
        parts.keeper.health,
    )
    source = Scripted("m", start)
    sources = VersionSources({"m": source})
    sources.run(catalog.apply, keep=lambda name: (parts.keeper.health.lkg(name),))
    return parts, source, catalog, sources


def serve(parts: Parts, user: str = "u") -> Any:
    return parts.policy.serve("m", to_context(user))


def test_a_refreshed_version_serves_without_a_restart(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """A version the source adds is served at the next request; the registry shows it."""
    set_flags(m="2")
    parts, source, catalog, sources = wired(workspace, model(workspace, {"1": 1}), set_flags)
    try:
        before = serve(parts)
        assert before.version == "1" and before.fell_back
        source.queue.append(model(workspace, {"1": 1, "2": 2}))
        assert sources.refresh_now(timeout=30)
        handle = serve(parts)
        assert handle.version == "2" and handle.predict([[0.0]]).tolist() == [2]
        assert set(catalog.registry.models["m"].versions) == {"1", "2"}
        assert source.kept[-1] == ("1",)  # the LKG is what the source must keep
    finally:
        sources.close()
        parts.close()
    assert source.closed


def test_a_version_the_source_drops_is_answered_by_the_lkg(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Once dropped, a version is unknown: its flag is answered by the last known good one."""
    set_flags(m="2")
    parts, source, _, sources = wired(workspace, model(workspace, {"1": 1, "2": 2}), set_flags)
    try:
        assert serve(parts).version == "2"
        source.queue.append(model(workspace, {"1": 1}))
        assert sources.refresh_now(timeout=30)
        handle = serve(parts)
        assert handle.version == "1" and handle.requested_version == "2" and handle.fell_back
    finally:
        sources.close()
        parts.close()


def test_a_refreshed_version_of_a_stage_this_process_does_not_serve_is_refused(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """The stage gate judges refreshed versions too."""
    set_flags(m="2")
    start = model(workspace, {"1": 1}, version_fields={"1": {"stage": "production"}})
    governance = GovernanceOptions(allowed_stages=["production"])
    parts, source, _, sources = wired(workspace, start, set_flags, governance=governance)
    try:
        source.queue.append(
            model(workspace, {"1": 1, "2": 2}, version_fields={"1": {"stage": "production"}})
        )
        assert sources.refresh_now(timeout=30)
        handle = serve(parts)
        assert handle.version == "1" and str(handle.reason) == "POLICY"
    finally:
        sources.close()
        parts.close()


def test_a_failing_source_or_apply_never_stops_the_refresh_thread(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """A source that raises, or a spec that cannot be applied, is logged; the next refresh
    still runs."""
    set_flags(m="1")
    parts, source, _, sources = wired(workspace, model(workspace, {"1": 1}), set_flags)
    try:
        source.queue.append(RuntimeError("source bug"))
        assert sources.refresh_now(timeout=30)
        source.queue.append(model(workspace, {"1": 1}).model_copy(update={"name": "unknown"}))
        assert sources.refresh_now(timeout=30)
        assert sources.apply_errors == 1
        source.queue.append(model(workspace, {"1": 1, "2": 2}))
        assert sources.refresh_now(timeout=30)
        assert "2" in parts.policy.models["m"].versions
        assert sources.status("m") == {"refreshes": 3}
        assert sources.status("other") is None
    finally:
        sources.close()
        parts.close()


@pytest.mark.slow
def test_requests_during_refreshes_always_find_a_loadable_version(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """While the version set flips between two shapes, concurrent requests never fail."""
    set_flags(m="2")
    small, large = model(workspace, {"1": 1}), model(workspace, {"1": 1, "2": 2})
    parts, source, _, sources = wired(workspace, small, set_flags)
    errors: list[BaseException] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            try:
                handle = serve(parts)
                handle.predict([[0.0]])
            except BaseException as exc:
                errors.append(exc)
                return

    threads = [threading.Thread(target=hammer) for _ in range(3)]
    for thread in threads:
        thread.start()
    try:
        for index in range(20):
            source.queue.append(large if index % 2 == 0 else small)
            assert sources.refresh_now(timeout=30)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
        sources.close()
        parts.close()
    assert not errors


@pytest.mark.slow
def test_models_without_a_source_do_not_load_the_sources_package(workspace: Workspace) -> None:
    """A registry with no MLflow model never imports the sources, httpx for them, or mlflow."""
    workspace.add("m", "1", Constant(1))
    path = workspace.write()
    code = (
        "import sys; from modelflags import ModelFlags; "
        f"flags = ModelFlags({str(path)!r}); flags.get_model('m').predict([[0]]); flags.close(); "
        "print(sorted(m for m in ('modelflags.sources', 'mlflow', 'yaml') if m in sys.modules))"
    )
    tests = str(Path(__file__).parent)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([tests, *sys.path])}
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


@pytest.fixture(autouse=True)
def _no_stray_threads() -> Any:
    yield
    assert not [t for t in threading.enumerate() if t.name == "modelflags-versions"]
