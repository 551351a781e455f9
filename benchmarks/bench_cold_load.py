"""Cold load of a verified local artifact against a bare ``joblib.load``, same run, same files.

For a ~1 MB and a ~50 MB artifact of two kinds, a random forest (what scikit-learn users load:
many objects, deserialization dominates) and one float64 array (the worst case for
verification: deserializing is a copy, so hashing dominates), it prints medians of interleaved
repeats and their ratio to the bare baseline:

* ``bare``: ``joblib.load(path)``, nothing verified (the baseline);
* ``load``: ``ArtifactStore.load`` (the load contract: read once into memory while hashing, then
  ``joblib.load`` of those very bytes). Target: ratio <= 1.10;
* ``fetch+load``: the two calls of earlier releases, ``ArtifactStore.fetch`` then
  ``LoaderRegistry.load(path)``, which now hashes twice (the registry re-reads the path);
* ``hash+load``: ``file_sha256`` then ``joblib.load(path)``: what a first load cost before
  (verify a path, then reopen it: the window this design closes), for comparison.

Then the peak memory of one load of the 50 MB artifacts, each mode in a fresh process: the rise
of the resident peak (Linux ``VmHWM``, reset just before the load, after ``malloc_trim``) and the
tracemalloc peak (which counts ``numpy.empty`` arrays whole before their pages are touched, so it
overstates what is resident).

Run: ``python benchmarks/bench_cold_load.py [--repeats 7] [--cpu]`` (about a minute). ``--cpu``
times with the process's CPU time instead of the wall clock: steadier on a shared machine.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import joblib
import numpy as np
from sklearn.ensemble import RandomForestClassifier

from modelflags.artifacts import ArtifactStore, LoaderRegistry, file_sha256
from modelflags.registry import Registry, VersionSpec

MODES = ("bare", "load", "fetch+load", "hash+load")


def build(folder: Path) -> dict[str, Path]:
    """Four artifacts: forest and array, about 1 MB and 50 MB each."""
    made = {}
    rng = np.random.RandomState(0)
    for label, samples, trees in (("forest 1 MB", 1_500, 20), ("forest 50 MB", 16_000, 100)):
        X = rng.rand(samples, 10)
        y = rng.randint(0, 2, samples)  # noise: trees grow to full depth
        model = RandomForestClassifier(n_estimators=trees, random_state=0).fit(X, y)
        made[label] = folder / f"{label.replace(' ', '-')}.joblib"
        joblib.dump(model, made[label])
    for label, megabytes in (("array 1 MB", 1), ("array 50 MB", 50)):
        made[label] = folder / f"{label.replace(' ', '-')}.joblib"
        joblib.dump({"weights": rng.rand(megabytes * 1_000_000 // 8)}, made[label])
    return made


def spec_for(path: Path) -> VersionSpec:
    digest = file_sha256(path)  # streamed: no whole-file buffer raises the memory baseline
    registry = Registry.from_mapping(
        {
            "models": {
                "m": {
                    "default_version": "v1",
                    "versions": {"v1": {"uri": str(path), "sha256": digest}},
                }
            }
        }
    )
    return registry.models["m"].versions["v1"]


def runner(mode: str, path: Path) -> Callable[[], object]:
    spec = spec_for(path)
    store, loaders = ArtifactStore(), LoaderRegistry()
    if mode == "bare":
        return lambda: joblib.load(path)
    if mode == "load":
        return lambda: store.load("m", "v1", spec, loaders).value
    if mode == "fetch+load":
        return lambda: loaders.load("m", "v1", spec, store.fetch("m", "v1", spec))

    def hash_then_load() -> object:
        assert file_sha256(path) == spec.sha256
        return joblib.load(path)

    return hash_then_load


def timed(run: Callable[[], object], count: int, clock: Callable[[], float]) -> float:
    started = clock()
    for _ in range(count):
        run()
    return (clock() - started) / count


MEASURE = """
import ctypes, json, sys, tracemalloc
sys.path.insert(0, sys.argv[1])
from bench_cold_load import runner
from pathlib import Path
run = runner(sys.argv[2], Path(sys.argv[3]))
traced = sys.argv[4] == "1"
import joblib, numpy, sklearn.ensemble  # imports outside the measurement

def status(field):
    with open("/proc/self/status") as lines:
        return next(int(line.split()[1]) for line in lines if line.startswith(field + ":"))

ctypes.CDLL("libc.so.6").malloc_trim(0)  # no freed-but-resident memory to reuse
with open("/proc/self/clear_refs", "w") as refs:
    refs.write("5")  # the resident peak (VmHWM) starts again from now
before = status("VmRSS")
if traced:
    tracemalloc.start()
run()
peak = tracemalloc.get_traced_memory()[1] if traced else 0
print(json.dumps({"rss_kib": status("VmHWM") - before, "traced": peak}))
"""


def peak_memory(mode: str, path: Path) -> tuple[float, float]:
    """(resident peak rise, tracemalloc peak) of one load in a fresh process, in MiB."""
    here = str(Path(__file__).resolve().parent)
    results = []
    for traced in ("0", "1"):
        out = subprocess.run(
            [sys.executable, "-c", MEASURE, here, mode, str(path), traced],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        results.append(json.loads(out))
    return results[0]["rss_kib"] / 1024, results[1]["traced"] / 2**20


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--cpu", action="store_true", help="time with process CPU time")
    options = parser.parse_args()
    clock = time.process_time if options.cpu else time.perf_counter
    with tempfile.TemporaryDirectory() as tmp:
        artifacts = build(Path(tmp))
        kind = "CPU time" if options.cpu else "wall time"
        print(f"cold load, {kind}, median of {options.repeats} interleaved rounds; ratio to bare")
        for label, path in artifacts.items():
            runs = {mode: runner(mode, path) for mode in MODES}
            count = 20 if "1 MB" in label else 2
            for run in runs.values():
                run()  # warm the page cache and imports
            rounds: dict[str, list[float]] = {name: [] for name in MODES}
            for _ in range(options.repeats):
                for mode, run in runs.items():
                    rounds[mode].append(timed(run, count, clock))
            medians = {mode: statistics.median(times) for mode, times in rounds.items()}
            size = path.stat().st_size / 1e6
            cells = " | ".join(
                f"{mode} {medians[mode] * 1e3:7.2f} ms ({medians[mode] / medians['bare']:.2f}x)"
                for mode in MODES
            )
            print(f"  {label:13} ({size:5.1f} MB): {cells}")
        print("peak memory of one load (fresh process): resident rise | tracemalloc peak")
        for label in ("forest 50 MB", "array 50 MB"):
            peaks = []
            for mode in MODES:
                rss, traced = peak_memory(mode, artifacts[label])
                peaks.append(f"{mode} {rss:6.1f} | {traced:6.1f} MiB")
            print(f"  {label:13}: " + " ; ".join(peaks))


if __name__ == "__main__":
    main()
