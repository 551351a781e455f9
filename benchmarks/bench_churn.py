"""Peak memory while 30 versions churn through one model, each becoming the LKG in turn.

Each version is a RandomForest joblib artifact of a few MB. A fresh process flags each version in
turn, serves it (it loads) and calls ``predict`` (it proves itself and becomes the LKG, so the
previous LKG is unpinned), then serves it once more as the LKG. Its peak RSS (``ru_maxrss``) is
printed for the cache bounded to ``max_models=3`` with ``max_bytes`` of 3 artifacts, and of half
an artifact (every version is larger than the cache: only the pinned LKG is kept), against the
same churn with room for all 30 versions (the baseline, measured in the same run), and against the
process before any load.

Run: ``python benchmarks/bench_churn.py`` (about two minutes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

VERSIONS = 30


def build(folder: Path) -> int:
    """Write the artifacts and registry; returns the largest artifact's size in bytes."""
    import numpy as np
    from sklearn.ensemble import RandomForestClassifier

    from modelflags.testing import RegistryBuilder

    rng = np.random.RandomState(0)
    X = rng.rand(8_000, 8)
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    builder = RegistryBuilder(folder)
    largest = 0
    for index in range(1, VERSIONS + 1):
        model = RandomForestClassifier(n_estimators=40, random_state=index).fit(X, y)
        largest = max(largest, builder.add("m", f"v{index}", model).stat().st_size)
    builder.write()
    return largest


def churn(folder: Path, max_models: int, max_bytes: int | None) -> dict[str, float]:
    """In this process: serve every version in turn; memory figures in MB."""
    import gc
    import resource

    import numpy as np

    from modelflags import ModelFlags
    from modelflags.testing import InMemoryFlags

    def peak() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    def current() -> float:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    X = np.zeros((4, 8))
    source = InMemoryFlags(m="v1").install()
    before = peak()
    with ModelFlags(
        folder / "registry.json", max_models=max_models, max_bytes=max_bytes, prewarm=False
    ) as flags:
        for index in range(1, VERSIONS + 1):
            source.set(m=f"v{index}")
            handle = flags.get_model("m", "user-1")
            assert handle.version == f"v{index}", handle
            handle.predict(X)  # it proves itself: the LKG moves
            flags.get_model("m", "user-2").predict(X)  # served as the LKG, pinned
            del handle
        loaded = len(flags.status()["m"].loaded)
        gc.collect()
        return {"before": before, "peak": peak(), "end": current(), "loaded": loaded}


def run_child(folder: Path, max_models: int, max_bytes: int | None) -> dict[str, float]:
    done = subprocess.run(
        [sys.executable, __file__, "--churn", str(folder), str(max_models), str(max_bytes or 0)],
        capture_output=True,
        text=True,
        check=True,
        env=os.environ.copy(),
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def main() -> int:
    if len(sys.argv) == 5 and sys.argv[1] == "--churn":
        max_bytes = int(sys.argv[4]) or None
        print(json.dumps(churn(Path(sys.argv[2]), int(sys.argv[3]), max_bytes)))
        return 0
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        size = build(folder)
        print(f"python {sys.version.split()[0]}, {VERSIONS} versions of {size / 1e6:.1f} MB each")
        bounded = run_child(folder, 3, 3 * size)
        too_big = run_child(folder, 3, size // 2)
        unbounded = run_child(folder, VERSIONS + 1, None)
        for name, figures in (
            ("max_models=3, max_bytes=3 versions", bounded),
            ("max_models=3, max_bytes=1/2 version", too_big),
            (f"max_models={VERSIONS + 1}, no max_bytes", unbounded),
        ):
            grown = figures["peak"] - figures["before"]
            print(
                f"{name:<37} RSS before loading {figures['before']:6.1f} MB | peak "
                f"{figures['peak']:6.1f} MB (+{grown:5.1f}) | after the churn "
                f"{figures['end']:6.1f} MB | versions cached at the end {figures['loaded']:.0f}"
            )
        room = unbounded["peak"] - unbounded["before"]
        for name, figures in (("3 versions", bounded), ("1/2 version", too_big)):
            ratio = (figures["peak"] - figures["before"]) / room
            print(f"peak growth, max_bytes={name} / room for every version: {ratio:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
