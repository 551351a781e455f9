"""What a version must pass to load: the digest first seen for its id, a compatible environment,
and scikit-learn's own version warning judged by the same policy. Each refusal lets the LKG serve.
"""

from __future__ import annotations

import json
import logging
import pickle
import threading
import warnings
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
import pytest
import sklearn
from sklearn.linear_model import LogisticRegression

from modelflags import ModelFlags, ModelUnavailableError, VersionLoadFailed, VersionRefusedError
from modelflags.serving.health import STATE_FILE
from modelflags.serving.unpickling import collect_version_warnings

from models import Constant
from support import Workspace, sha256_of

X = np.zeros((3, 2))
WAIT = 10.0
OTHER_SKLEARN = "0.0.1".ljust(len(sklearn.__version__), "0")  # same length: the pickle stays valid


def other_sklearn_pickle(estimator: object) -> bytes:
    """``estimator`` pickled as if by another scikit-learn (the recorded "other" version)."""
    data = pickle.dumps(estimator)
    return data.replace(sklearn.__version__.encode(), OTHER_SKLEARN.encode())


@pytest.fixture
def fitted(features: np.ndarray) -> LogisticRegression:
    return LogisticRegression().fit(features[:, :2], (features[:, 0] > 0.5).astype(int))


def quarantine_cause(flags: ModelFlags, version: str) -> str:
    (entry,) = [q for q in flags.status()["m"].quarantined if q.version == version]
    return entry.cause


# -- immutable ids -------------------------------------------------------------------------------


def test_an_id_re_pointed_at_other_bytes_is_refused_after_a_restart_and_the_lkg_serves(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """v2 served with one digest; the registry later names other bytes for v2: refused with
    both digests named, and the last known good version answers."""
    workspace.add("m", "v1", Constant(1))
    path = workspace.add("m", "v2", Constant(2))
    first = sha256_of(path)
    state = tmp_path / "state"
    set_flags(m="v2")
    with ModelFlags(workspace.write(), state_dir=state) as flags:
        assert flags.get_model("m").predict(X).tolist() == [2, 2, 2]
    assert json.loads((state / STATE_FILE).read_text())["digests"] == {"m": {"v2": first}}

    path = workspace.add("m", "v2", Constant(3))  # same id, other bytes, a registry that agrees
    workspace.add("m", "v3", Constant(3))
    events: list[object] = []
    with ModelFlags(
        workspace.write(), state_dir=state, listeners=[events.append], prewarm=False
    ) as flags:
        set_flags(m="v3")
        flags.get_model("m").predict(X)  # v3 proves itself: the LKG leaves v2
        set_flags(m="v2")
        model = flags.get_model("m")
        assert (model.version, model.requested_version, model.reason) == ("v3", "v2", "FALLBACK")
        cause = quarantine_cause(flags, "v2")
        assert flags.flush(WAIT)
    assert f"model 'm' version 'v2': the registry now gives it sha256 {sha256_of(path)}" in cause
    assert f"but it was first served with sha256 {first}" in cause
    assert str(state / STATE_FILE) in cause
    failed = [e for e in events if isinstance(e, VersionLoadFailed) and e.version == "v2"]
    assert [e.error_type for e in failed] == ["VersionRefusedError"]


def test_a_saved_lkg_re_pointed_at_other_bytes_gives_way_to_the_default(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """The LKG itself is checked: a changed one is refused and default_version takes over."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    state = tmp_path / "state"
    set_flags(m="v2")
    with ModelFlags(workspace.write(), state_dir=state) as flags:
        flags.get_model("m").predict(X)
    workspace.add("m", "v2", Constant(5))
    set_flags()
    with ModelFlags(workspace.write(), state_dir=state) as flags:
        model = flags.get_model("m")
        assert (model.version, model.predict(X).tolist()) == ("v1", [1, 1, 1])
        assert "first served with sha256" in quarantine_cause(flags, "v2")
        assert flags.status()["m"].lkg == "v1"


def test_the_same_bytes_under_the_same_id_load_after_a_restart(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """Nothing changed: nothing is refused, and the recorded digest stays the first one."""
    workspace.add("m", "v1", Constant(1))
    registry = workspace.write()
    state = tmp_path / "state"
    for _ in range(2):
        with ModelFlags(registry, state_dir=state) as flags:
            assert flags.get_model("m").predict(X).tolist() == [1, 1, 1]
            assert flags.status()["m"].quarantined == ()


def test_a_digest_dropped_from_the_registry_is_refused_too(
    workspace: Workspace, set_flags: Callable[..., None], tmp_path: Path
) -> None:
    """An entry that no longer gives a sha256 could name any bytes: refused."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    state = tmp_path / "state"
    set_flags(m="v2")
    with ModelFlags(workspace.write(), state_dir=state) as flags:
        flags.get_model("m").predict(X)
    del workspace.models["m"]["versions"]["v2"]["sha256"]
    with ModelFlags(workspace.write(), state_dir=state) as flags:
        set_flags(m="v1")
        flags.get_model("m").predict(X)
        set_flags(m="v2")
        assert flags.get_model("m").version != "v2"
        assert "now gives it no sha256" in quarantine_cause(flags, "v2")


def test_a_state_file_without_digests_still_loads_and_gains_them(
    workspace: Workspace, tmp_path: Path
) -> None:
    """Files from before digests were recorded keep working."""
    workspace.add("m", "v1", Constant(1))
    workspace.add("m", "v2", Constant(2))
    state = tmp_path / "state"
    state.mkdir()
    (state / STATE_FILE).write_text(json.dumps({"lkg": {"m": "v2"}}))
    with ModelFlags(workspace.write(), state_dir=state) as flags:
        assert flags.get_model("m").version == "v2"
        flags.get_model("m").predict(X)
    saved = json.loads((state / STATE_FILE).read_text())
    assert saved["lkg"] == {"m": "v2"}
    assert list(saved["digests"]["m"]) == ["v2"]


def test_malformed_digests_in_the_state_file_are_skipped_with_a_warning(
    workspace: Workspace, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A digest that is not 64 hex characters is ignored, never trusted."""
    path = workspace.add("m", "v1", Constant(1))
    state = tmp_path / "state"
    state.mkdir()
    saved = {"lkg": {"m": "v1"}, "digests": {"m": {"v1": "not-a-digest", "v0": sha256_of(path)}}}
    (state / STATE_FILE).write_text(json.dumps(saved))
    with caplog.at_level(logging.WARNING), ModelFlags(workspace.write(), state_dir=state) as f:
        assert f.get_model("m").predict(X).tolist() == [1, 1, 1]
    assert "ignoring 1 malformed digests of model 'm'" in caplog.text
    (state / STATE_FILE).write_text(json.dumps({"lkg": {"m": "v1"}, "digests": ["v1"]}))
    with caplog.at_level(logging.WARNING), ModelFlags(workspace.write(), state_dir=state) as f:
        assert f.get_model("m").predict(X).tolist() == [1, 1, 1]
    assert "'digests' is not a table; ignored" in caplog.text


# -- environment compatibility ------------------------------------------------------------------


def recorded(version: str) -> dict[str, object]:
    return {"environment": {"libraries": {"scikit-learn": version, "numpy": np.__version__}}}


def test_a_version_recorded_with_another_sklearn_minor_is_refused_before_it_is_read(
    workspace: Workspace, set_flags: Callable[..., None], fitted: LogisticRegression
) -> None:
    """Default policy: another scikit-learn minor is refused, naming both versions, before the
    artifact is even read (here it is missing, and that is not what the cause says)."""
    workspace.add("m", "v1", fitted)
    path = workspace.add("m", "v2", fitted, lineage=recorded("1.2.0"))
    path.unlink()
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        model = flags.get_model("m")
        assert (model.version, model.reason) == ("v1", "FALLBACK")
        cause = quarantine_cause(flags, "v2")
    assert "model 'm' version 'v2' may not load here (its recorded environment)" in cause
    assert f"scikit-learn 1.2.0 at registration, {sklearn.__version__} here" in cause
    assert "not found" not in cause


@pytest.mark.parametrize(("policy", "logged"), [("warn", True), ("ignore", False)])
def test_the_model_s_compat_policy_may_let_it_load(
    workspace: Workspace,
    set_flags: Callable[..., None],
    fitted: LogisticRegression,
    caplog: pytest.LogCaptureFixture,
    policy: str,
    logged: bool,
) -> None:
    """compat = "warn" loads with a warning naming both versions; "ignore" loads silently."""
    workspace.add("m", "v1", fitted, lineage=recorded("1.2.0"))
    workspace.set("m", compat=policy)
    with caplog.at_level(logging.WARNING), ModelFlags(workspace.write()) as flags:
        assert flags.get_model("m").version == "v1"
    warned = [r.getMessage() for r in caplog.records if "different environment" in r.getMessage()]
    assert bool(warned) is logged
    if logged:
        assert f"scikit-learn 1.2.0 at registration, {sklearn.__version__} here" in warned[0]


def test_sklearn_s_version_warning_while_unpickling_is_refused_like_a_recorded_one(
    workspace: Workspace, set_flags: Callable[..., None], fitted: LogisticRegression
) -> None:
    """No environment recorded: the pickle itself says which scikit-learn made it, and that is
    judged by the same policy (even where warnings are errors, as in this suite)."""
    workspace.add("m", "v1", fitted)
    workspace.add("m", "v2", raw=other_sklearn_pickle(fitted), suffix=".pkl")
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        model = flags.get_model("m")
        assert (model.version, model.reason) == ("v1", "FALLBACK")
        cause = quarantine_cause(flags, "v2")
    assert "may not load here (scikit-learn while unpickling)" in cause
    assert f"scikit-learn {OTHER_SKLEARN} at registration, {sklearn.__version__} here" in cause


def test_sklearn_s_version_warning_under_warn_loads_and_is_logged_not_raised(
    workspace: Workspace, fitted: LogisticRegression, caplog: pytest.LogCaptureFixture
) -> None:
    """compat = "warn": the version loads, the warning becomes one log line."""
    workspace.add("m", "v1", raw=other_sklearn_pickle(fitted), suffix=".pkl")
    workspace.set("m", compat="warn")
    with caplog.at_level(logging.WARNING), ModelFlags(workspace.write()) as flags:
        model = flags.get_model("m")
        np.testing.assert_array_equal(model.predict(X), fitted.predict(X))
    assert "(scikit-learn while unpickling)" in caplog.text


def test_loads_on_many_threads_collect_their_own_warnings_and_restore_the_settings() -> None:
    """Eight threads unpickle at once: each sees its own warning; other warnings of the same
    moment still reach the process's settings (errors here); the settings come back intact."""
    data = other_sklearn_pickle(LogisticRegression())
    filters_before, show_before = list(warnings.filters), warnings.showwarning
    barrier = threading.Barrier(8)
    seen: list[int] = []
    raised: list[bool] = []
    lock = threading.Lock()

    def load() -> None:
        with collect_version_warnings() as caught:
            barrier.wait(WAIT)
            pickle.loads(data)
            try:
                warnings.warn("unrelated", UserWarning, stacklevel=1)
            except UserWarning:
                with lock:
                    raised.append(True)
        with lock:
            seen.append(len(caught))

    threads = [threading.Thread(target=load) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert seen == [1] * 8
    assert raised == [True] * 8  # filterwarnings = error still applies to everything else
    assert warnings.filters == filters_before
    assert warnings.showwarning is show_before


def test_a_version_refusal_is_a_load_error_with_the_check_named(
    workspace: Workspace, fitted: LogisticRegression
) -> None:
    """The default version itself refused: ModelUnavailableError chains a VersionRefusedError."""
    workspace.add("m", "v1", fitted, lineage=recorded("1.2.0"))
    with (
        ModelFlags(workspace.write()) as flags,
        pytest.raises(ModelUnavailableError, match="cannot be served") as caught,
    ):
        flags.get_model("m")
    refusal = caught.value.__cause__
    assert isinstance(refusal, VersionRefusedError)
    assert (refusal.model, refusal.version, refusal.check) == ("m", "v1", "environment")


def test_a_joblib_artifact_by_another_sklearn_is_caught_as_well(
    workspace: Workspace, set_flags: Callable[..., None], fitted: LogisticRegression, tmp_path: Path
) -> None:
    """joblib files unpickle the same way: the warning is met and judged."""
    plain = tmp_path / "plain.joblib"
    joblib.dump(fitted, plain)
    data = plain.read_bytes().replace(sklearn.__version__.encode(), OTHER_SKLEARN.encode())
    workspace.add("m", "v1", fitted)
    workspace.add("m", "v2", raw=data)
    set_flags(m="v2")
    with ModelFlags(workspace.write()) as flags:
        assert flags.get_model("m").version == "v1"
        assert "scikit-learn while unpickling" in quarantine_cause(flags, "v2")
