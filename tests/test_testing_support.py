"""What ``modelflags.testing`` ships to users' tests, and the option groups of ``ModelFlags``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import modelflags
from modelflags import (
    AuditOptions,
    Backoff,
    CacheOptions,
    ModelFlags,
    PrewarmCompleted,
    RolloutOptions,
    ServingReason,
    ShadowOptions,
    load_registry,
)
from modelflags.options import gather
from modelflags.testing import FakeClock, InMemoryFlags, RegistryBuilder

from models import Broken, Constant
from support import wait_until

X = np.zeros((3, 2))
SRC = Path(modelflags.__file__).resolve().parents[1]  # the code under test, not an install


@pytest.mark.slow
def test_the_testing_module_imports_and_pins_without_pytest(tmp_path: Path) -> None:
    """In a process where pytest cannot be imported, ``pinned()`` pins a real ModelFlags."""
    script = textwrap.dedent(
        """
        import sys
        sys.modules["pytest"] = None  # any import of pytest now raises ImportError
        from modelflags import ModelFlags
        from modelflags.testing import FakeClock, InMemoryFlags, RegistryBuilder, pinned

        builder = RegistryBuilder(sys.argv[1])
        builder.add("m", "v1", raw=b"one", suffix=".bin", loader="text")
        builder.add("m", "v2", raw=b"two", suffix=".bin", loader="text")
        InMemoryFlags(m="v1").install()
        loaders = {"text": lambda path: open(path).read()}
        with ModelFlags(builder.write(), loaders=loaders, clock=FakeClock()) as flags:
            before = flags.get_model("m", "u1").version
            with pinned(m="v2"):
                during = flags.get_model("m", "u1")
            after = flags.get_model("m", "u1").version
        print(before, during.version, str(during.reason), after, "pytest" in sys.modules and
              sys.modules["pytest"] is not None)
        """
    )
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["v1", "v2", "OVERRIDE", "v1", "False"]


def test_the_fake_clock_moves_only_forward_by_hand() -> None:
    """``advance`` moves it; going back raises."""
    clock = FakeClock(start=10.0)
    assert clock() == clock.now == 10.0
    clock.advance(2.5)
    assert clock() == 12.5
    with pytest.raises(ValueError, match="never goes back"):
        clock.advance(-1)


def test_the_fake_clock_drives_quarantine_back_off(tmp_path: Path) -> None:
    """With ``clock=FakeClock()`` a quarantine's retry time passes when the test says so."""
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    builder.add("m", "v2", Broken(2))
    InMemoryFlags(m="v2").install()
    clock = FakeClock()
    with ModelFlags(builder.write(), clock=clock, backoff=Backoff(initial=10.0)) as flags:
        assert flags.get_model("m", "u1").predict(X).tolist() == [1, 1, 1]
        assert flags.status()["m"].quarantined[0].retry_in_s == 10.0
        assert flags.get_model("m", "u1").version == "v1"
        clock.advance(10.0)
        assert flags.status()["m"].quarantined[0].retry_in_s == 0.0
        assert flags.get_model("m", "u1").version == "v2"


def test_in_memory_flags_switch_versions_live_through_the_change_event(tmp_path: Path) -> None:
    """``set()`` emits a configuration change: the ModelFlags prewarms the new version and
    serves it."""
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    builder.add("m", "v2", Constant(2))
    flags_source = InMemoryFlags(m="v1").install()
    seen: list[object] = []
    with ModelFlags(builder.write(), listeners=[seen.append]) as flags:
        assert flags.get_model("m", "u1").version == "v1"
        flags_source.set(m="v2")
        wait_until(
            lambda: any(isinstance(e, PrewarmCompleted) and e.versions == ("v2",) for e in seen),
            5,
            "the prewarm pass the change event starts",
        )
        handle = flags.get_model("m", "u1")
        assert (handle.version, handle.reason) == ("v2", ServingReason.STATIC)
        assert handle.predict(X).tolist() == [2, 2, 2]


def test_in_memory_flags_install_for_a_domain(tmp_path: Path) -> None:
    """``install(domain)`` sets the provider of that domain only."""
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    builder.add("m", "v2", Constant(2))
    InMemoryFlags(m="v2").install("tenant-a")
    with (
        ModelFlags(builder.write(), domain="tenant-a") as scoped,
        ModelFlags(builder.write()) as default,
    ):
        assert scoped.get_model("m", "u1").version == "v2"
        assert default.get_model("m", "u1").version == "v1"


def test_the_registry_builder_hashes_each_artifact(tmp_path: Path) -> None:
    """The registry it writes loads, and names each artifact with its real sha256 and size."""
    builder = RegistryBuilder(tmp_path)
    first = builder.add("m", "v1", Constant(1))
    second = builder.add("m", "v2", raw=b"\x80\x05raw bytes", suffix=".pkl", default=True)
    registry = load_registry(builder.write())
    spec = registry.models["m"]
    assert spec.default_version == "v2"
    for version, path in (("v1", first), ("v2", second)):
        data = path.read_bytes()
        assert spec.versions[version].sha256 == hashlib.sha256(data).hexdigest()
        assert spec.versions[version].size == len(data)
    assert builder.registry().models["m"].versions["v1"].sha256 == spec.versions["v1"].sha256


def test_a_registry_builders_registry_serves(tmp_path: Path) -> None:
    """The artifacts it wrote pass verification and load in a real ModelFlags."""
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(7))
    InMemoryFlags(m="v1").install()
    with ModelFlags(builder.registry()) as flags:
        handle = flags.get_model("m", "u1")
        assert (handle.version, handle.fell_back) == ("v1", False)
        assert handle.predict(X).tolist() == [7, 7, 7]


# -- option groups -----------------------------------------------------------------------------


def test_a_flat_option_and_its_group_give_the_same_options() -> None:
    """``max_models=2`` is ``cache=CacheOptions(max_models=2)``, and so on for every group."""
    assert gather({"max_models": 2}) == gather({}, cache=CacheOptions(max_models=2))
    assert gather({"shadow_workers": 3, "shadow_queue": 9}) == gather(
        {}, shadow=ShadowOptions(workers=3, queue=9)
    )
    assert gather({"metrics": True, "guardrail_interval": 0.5}) == gather(
        {}, rollout=RolloutOptions(metrics=True, guardrail_interval=0.5)
    )
    assert gather({"decision_sample": 0.5}) == gather({}, audit=AuditOptions(sample=0.5))


@pytest.mark.parametrize("how", ["flat", "group"])
def test_max_models_bounds_the_cache_whether_flat_or_grouped(tmp_path: Path, how: str) -> None:
    """With two places for unpinned versions, serving four versions keeps two of them and the
    pinned LKG."""
    builder = RegistryBuilder(tmp_path)
    for index in range(1, 6):
        builder.add("m", f"v{index}", Constant(index))
    source = InMemoryFlags(m="v1").install()
    options = {"max_models": 2} if how == "flat" else {"cache": CacheOptions(max_models=2)}
    with ModelFlags(builder.write(), prewarm=False, **options) as flags:
        for version in ("v1", "v2", "v3", "v4", "v5"):
            source.set(m=version)
            assert flags.get_model("m", "u1").version == version
        status = flags.status()["m"]
    assert status.pinned == ("v1",)
    assert sorted(status.loaded) == ["v1", "v4", "v5"]


def test_a_flat_option_beside_its_group_is_a_type_error(tmp_path: Path) -> None:
    """``max_models=`` and ``cache=`` together are refused, naming both."""
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    with pytest.raises(TypeError, match=r"max_models=.*cache="):
        ModelFlags(builder.write(), cache=CacheOptions(), max_models=2)


def test_an_unknown_option_is_a_type_error_naming_it(tmp_path: Path) -> None:
    """A misspelt option is named in the error, with the options that exist."""
    builder = RegistryBuilder(tmp_path)
    builder.add("m", "v1", Constant(1))
    with pytest.raises(TypeError, match=r"'max_modles'.*max_models"):
        ModelFlags(builder.write(), max_modles=2)
