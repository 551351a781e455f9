"""Failure semantics: load failures and inference failures serve the LKG within the same call."""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from modelflags import (
    FALLBACK,
    Backoff,
    BecameLKG,
    FellBack,
    Loaded,
    LoadFailed,
    ModelFlags,
    ModelUnavailableError,
    Quarantined,
    VersionLoadError,
)
from modelflags.serving.health import STATE_FILE

from models import Broken, Constant, PickyAboutInput
from support import FakeClock, Workspace, holds_for, wait_until

X = np.zeros((3, 2))

BAD_ARTIFACTS = {
    "missing file": {"raw": None},
    "wrong digest": {"raw": b"tampered", "digest": "0" * 64},
    "corrupt pickle": {"raw": b"\x80\x05not really a pickle"},
    "incompatible pickle": {"raw": b"cgone_module_for_tests\nThing\n(tR."},
    "loader exception": {"raw": b"anything", "loader": "explodes"},
}


def explodes(path: Path) -> object:
    raise MemoryError("loader ran out of memory")


def add_bad(workspace: Workspace, kind: str) -> None:
    case = BAD_ARTIFACTS[kind]
    raw = case["raw"]
    fields = {"loader": case["loader"]} if "loader" in case else {}
    path = workspace.add("m", "v2", raw=raw if raw is not None else b"x", suffix=".pkl", **fields)
    if raw is None:
        path.unlink()
    if "digest" in case:
        workspace.models["m"]["versions"]["v2"]["sha256"] = case["digest"]


@pytest.mark.parametrize("kind", sorted(BAD_ARTIFACTS))
def test_version_that_fails_to_load_is_served_by_lkg_in_the_same_call(
    workspace: Workspace, set_flags: Callable[..., None], clock: FakeClock, kind: str
) -> None:
    """Each kind of load failure serves the LKG with fell_back set and quarantines the version."""
    workspace.add("m", "v1", Constant(1))
    add_bad(workspace, kind)
    set_flags(m="v2")
    events: list[object] = []
    with ModelFlags(
        workspace.write(), clock=clock, listeners=[events.append], loaders={"explodes": explodes}
    ) as flags:
        model = flags.get_model("m", "u1")
        assert model.version == "v1"
        assert model.requested_version == "v2"
        assert model.fell_back is True
        assert model.reason == FALLBACK
        assert model.predict(X).tolist() == [1, 1, 1]
        quarantined = flags.status()["m"].quarantined
        assert [(q.version, q.failures, q.retry_in_s) for q in quarantined] == [("v2", 1, 1.0)]
        assert "'m'" in quarantined[0].cause and "'v2'" in quarantined[0].cause
        flags.flush(5)
    kinds = [type(e) for e in events]
    assert LoadFailed in kinds and FellBack in kinds and Quarantined in kinds


def test_quarantine_backs_off_doubling_to_a_cap(
    workspace: Workspace, set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """No request retries a failed version before its back-off ends: 1 s, 2 s, 4 s, capped."""
    workspace.add("m", "v1", Constant(1))
    add_bad(workspace, "loader exception")
    attempts: list[float] = []

    def counting(path: Path) -> object:
        attempts.append(clock.now)
        raise RuntimeError("still broken")

    set_flags(m="v2")
    backoff = Backoff(initial=1.0, factor=2.0, maximum=3.0)
    # Without prewarm every retry runs in the request, so attempts line up with the clock.
    with ModelFlags(
        workspace.write(),
        clock=clock,
        backoff=backoff,
        loaders={"explodes": counting},
        prewarm=False,
    ) as flags:
        for step in [0.0, 0.5, 0.49, 0.02, 1.0, 0.99, 0.02, 2.99, 0.02, 2.99, 0.02]:
            clock.advance(step)
            assert flags.get_model("m").version == "v1"
    start = 1000.0
    assert attempts == pytest.approx(
        [start, start + 1.01, start + 3.02, start + 6.03, start + 9.04]
    )


def test_inference_failure_runs_the_same_call_on_the_lkg(
    workspace: Workspace, set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """A method that raises on a non-LKG version is answered by the LKG and quarantines it."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Broken(2))
    events: list[object] = []
    set_flags(m="v2")
    with ModelFlags(workspace.write(), clock=clock, listeners=[events.append]) as flags:
        model = flags.get_model("m")
        assert model.version == "v2"
        assert model.predict(X).tolist() == [1, 1, 1]
        assert model.predict_proba(X).tolist() == [[0.0, 1.0]] * 3
        assert [q.version for q in flags.status()["m"].quarantined] == ["v2"]
        # Until the back-off ends, new requests are served by the LKG directly.
        again = flags.get_model("m")
        assert (again.version, again.requested_version, again.fell_back) == ("v1", "v2", True)
        clock.advance(1.0)
        assert flags.get_model("m").version == "v2"  # tried again after the back-off
        flags.flush(5)
    fell = [e for e in events if isinstance(e, FellBack)]
    assert fell[0].stage == "inference" and fell[0].method == "predict"
    assert "RuntimeError: broken model" in fell[0].cause


def test_any_model_method_and_call_are_guarded(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Other methods and calling the handle fall back too; plain attributes read through."""
    workspace.add("m", "v1", Constant(1))

    class BrokenExplain(Constant):
        pass

    workspace.add("m", "v2", Broken(2))
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        model = flags.get_model("m")
        assert model.threshold == 0.5
        assert model(X).tolist() == [1, 1, 1]
        model = flags.get_model("m")
        assert model.explain(X) == "constant 1 for 3 rows"  # served by v1 after v2's quarantine
        with pytest.raises(AttributeError):
            _ = model.no_such_attribute


def test_when_the_lkg_also_raises_the_original_error_reaches_the_caller(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Bad input is the caller's to see: the candidate's own exception, and no penalty."""
    workspace.add("m", "v1", PickyAboutInput(1))
    workspace.add("m", "v2", PickyAboutInput(2))
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        model = flags.get_model("m")
        with pytest.raises(ValueError, match="empty input") as caught:
            model.predict([])
        assert caught.value.__context__ is None
        assert flags.status()["m"].quarantined == ()
        assert model.predict(X).tolist() == [2, 2, 2]


def test_lkg_failing_alone_raises_its_error(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """When the version serving is the LKG, its exception propagates unchanged."""
    workspace.add("m", "v1", Broken(1))
    with ModelFlags(workspace.write()) as flags:
        with pytest.raises(RuntimeError, match="broken model"):
            flags.get_model("m").predict(X)
        assert flags.status()["m"].quarantined == ()


def test_a_version_becomes_lkg_after_one_successful_inference(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """Loading is not enough: the LKG moves after the first completed inference call."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    workspace.add("m", "v3", Broken(3))
    events: list[object] = []
    set_flags(m="v2")
    with ModelFlags(workspace.write(), listeners=[events.append]) as flags:
        model = flags.get_model("m")
        assert flags.status()["m"].lkg == "v1"
        model.predict(X)
        assert flags.status()["m"].lkg == "v2"
        assert flags.status()["m"].pinned == ("v2",)
        # v3 fails at inference: the new LKG (v2) answers.
        set_flags(m="v3")
        assert flags.get_model("m").predict(X).tolist() == [2, 2, 2]
        flags.flush(5)
    assert BecameLKG("m", "v2", "v1") in events


def test_lkg_persists_atomically_with_state_dir_and_only_then(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """With state_dir the LKG survives a restart; without it nothing is written anywhere."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    registry = workspace.write()
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    set_flags(m="v2")
    with ModelFlags(registry) as flags:
        flags.get_model("m").predict(X)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before

    state = tmp_path / "state"
    with ModelFlags(registry, state_dir=state) as flags:
        flags.get_model("m").predict(X)
    saved = json.loads((state / STATE_FILE).read_text())
    assert saved["lkg"] == {"m": "v2"}
    assert set(saved["digests"]["m"]) == {"v2"}  # the digest of each id loaded (v1 never was)
    assert [p.name for p in state.iterdir()] == [STATE_FILE]  # no temporary file left behind

    set_flags()  # the flag is gone: the restarted process starts from the saved LKG
    with ModelFlags(registry, state_dir=state) as flags:
        assert flags.get_model("m").version == "v2"
        assert flags.status()["m"].lkg == "v2"


def test_saved_lkg_unknown_to_the_registry_is_ignored(
    workspace: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A state file naming a version that no longer exists falls back to default_version."""
    workspace.add("m", "v1", Constant(1))
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_text(json.dumps({"lkg": {"m": "v0"}}))
    with caplog.at_level(logging.WARNING), ModelFlags(workspace.write(), state_dir=state) as flags:
        assert flags.get_model("m").version == "v1"
    assert "'v0', which the registry does not know" in caplog.text


def test_unloadable_lkg_raises_model_unavailable_with_cause(
    workspace: Workspace, set_flags: Callable[..., None]
) -> None:
    """When even the LKG (here the default) cannot load, the call raises with the cause chained."""
    path = workspace.add("m", "v1", Constant(1))
    path.unlink()
    with ModelFlags(workspace.write()) as flags:
        with pytest.raises(ModelUnavailableError, match="'v1' cannot be served") as caught:
            flags.get_model("m")
        assert isinstance(caught.value.__cause__, VersionLoadError)
        assert (caught.value.model, caught.value.version) == ("m", "v1")


def test_broken_saved_lkg_falls_back_to_default_version(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """A persisted LKG whose artifact was deleted gives way to default_version, which takes over."""
    workspace.add("m", "v1", Constant(1))
    path = workspace.add("m", "v2", Constant(2))
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_text(json.dumps({"lkg": {"m": "v2"}}))
    path.unlink()
    with ModelFlags(workspace.write(), state_dir=state) as flags:
        model = flags.get_model("m")
        assert (model.version, model.fell_back) == ("v1", True)
        assert flags.status()["m"].lkg == "v1"
    assert json.loads((state / STATE_FILE).read_text())["lkg"] == {"m": "v1"}


def test_listeners_run_on_a_background_thread_and_cannot_break_serving(
    workspace: Workspace, set_flags: Callable[..., None], caplog: pytest.LogCaptureFixture
) -> None:
    """A raising listener is logged; other listeners still get events; serving is unaffected."""
    workspace.add("m", "v1", Constant(1))
    threads: list[str] = []
    received: list[object] = []

    def bad(event: object) -> None:
        raise RuntimeError("listener bug")

    def good(event: object) -> None:
        threads.append(threading.current_thread().name)
        received.append(event)

    with caplog.at_level(logging.ERROR), ModelFlags(workspace.write(), listeners=[bad]) as flags:
        flags.add_listener(good)
        assert flags.get_model("m").predict(X).tolist() == [1, 1, 1]
        assert flags.flush(5)
        flags.remove_listener(good)
    assert [type(e) for e in received] == [Loaded]
    assert threads == ["modelflags-events"]
    assert "listener bug" in caplog.text


def test_status_reports_lkg_loaded_bytes_and_quarantine(
    workspace: Workspace, set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """status() tells the LKG, the loaded versions with bytes, and quarantines with retry time."""
    path = workspace.add("m", "v1", Constant(1))
    add_bad(workspace, "corrupt pickle")
    set_flags(m="v2")
    with ModelFlags(workspace.write(), clock=clock) as flags:
        flags.get_model("m")
        clock.advance(0.25)
        status = flags.status()["m"]
    assert status.lkg == "v1" and status.default_version == "v1" and status.flag == "m"
    assert status.loaded == {"v1": path.stat().st_size}
    assert status.pinned == ("v1",)
    (quarantine,) = status.quarantined
    assert quarantine.version == "v2" and quarantine.retry_in_s == pytest.approx(0.75)
    assert "UnpicklingError" in quarantine.cause or "loader 'pickle' failed" in quarantine.cause


@pytest.mark.slow
def test_flag_change_event_lifts_quarantine(
    workspace: Workspace, set_flags: Callable[..., None], clock: FakeClock
) -> None:
    """When the flag is changed at its source, its model's quarantined versions get another try."""
    from openfeature import api
    from openfeature.event import ProviderEventDetails

    workspace.add("m", "v1", Constant(1))
    add_bad(workspace, "corrupt pickle")
    set_flags(m="v2")
    provider = api.get_client().provider
    # Without prewarm: a prewarm pass would retry v2 at once and quarantine it again.
    with ModelFlags(workspace.write(), clock=clock, prewarm=False) as flags:
        flags.get_model("m")

        def waiting() -> bool:
            return any(q.retry_in_s > 0 for q in flags.status()["m"].quarantined)

        assert waiting()
        provider.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=["other"]))
        # The SDK delivers events on its own threads and nothing tells when ModelFlags has
        # handled this one: watch for a while.
        holds_for(waiting, 0.2, "the quarantine stays")
        provider.emit_provider_configuration_changed(ProviderEventDetails(flags_changed=["m"]))
        wait_until(lambda: not waiting(), 5.0, "the quarantine lifted")
        (lifted,) = flags.status()["m"].quarantined  # may be tried now; its failures are kept
        assert (lifted.retry_in_s, lifted.failures) == (0.0, 1)
        assert flags.release("m") == ["v2"]
