"""Shadow mode: mirror live traffic to a candidate version and measure how far it agrees.

Everything runs in a temporary folder with flagd's provider in FILE mode (no server):

1. a primary ``v1`` and a candidate ``v2`` are trained: both are logistic regressions, but the
   candidate learned a decision boundary moved from 0.5 to 0.7;
2. a fixed evaluation set of 100 rows is built so that exactly 20 rows fall between the two
   boundaries: the versions must disagree on exactly 20% of it;
3. the flag ``recommender`` serves ``v1``, the flag ``recommender.shadow`` names ``v2``, and the
   registry mirrors every call (``shadow_rate = 1.0``);
4. 500 requests (one row each, every row five times) call ``predict`` and ``predict_proba``; the
   answers are always the primary's;
5. after ``flush``, the shadow report shows the counts, the agreement (80%), the mean and maximum
   absolute difference of the probabilities, and the latencies of both versions.

Run: ``python examples/shadow.py``
"""

from __future__ import annotations

import hashlib
import json
import tempfile
import time
from pathlib import Path

import joblib
import numpy as np
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from sklearn.linear_model import LogisticRegression

from modelflags import ModelFlags

REQUESTS = 500
DISAGREEING = 20  # rows of the 100-row evaluation set that lie between the two boundaries


def train() -> dict[str, LogisticRegression]:
    """Two versions trained on the same inputs, labelled by thresholds 0.5 and 0.7."""
    x = (np.arange(400) + 0.5) / 400
    X = x.reshape(-1, 1)
    return {
        "v1": LogisticRegression(C=1000.0).fit(X, (x > 0.5).astype(int)),
        "v2": LogisticRegression(C=1000.0).fit(X, (x > 0.7).astype(int)),
    }


def evaluation_set() -> np.ndarray:
    """100 rows: 20 between the boundaries (0.58..0.62), 80 far from both (below 0.4, above 0.8)."""
    between = np.linspace(0.58, 0.62, DISAGREEING)
    low = np.linspace(0.0, 0.4, 50)
    high = np.linspace(0.8, 1.0, 100 - DISAGREEING - 50)
    return np.concatenate([low, between, high]).reshape(-1, 1)


def write_registry(folder: Path, models: dict[str, LogisticRegression]) -> Path:
    lines = [
        "[models.recommender]",
        'default_version = "v1"',
        'shadow_flag = "recommender.shadow"',
        "shadow_rate = 1.0",
        "",
    ]
    for version, model in models.items():
        path = folder / f"recommender-{version}.joblib"
        joblib.dump(model, path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        lines += [
            f"[models.recommender.versions.{version}]",
            f'uri = "{path.name}"',
            f'sha256 = "{digest}"',
            "",
        ]
    registry = folder / "registry.toml"
    registry.write_text("\n".join(lines))
    return registry


def write_flags(path: Path) -> None:
    """``recommender`` serves v1 to everyone; ``recommender.shadow`` names v2 as the shadow."""
    document = {
        "flags": {
            "recommender": {
                "state": "ENABLED",
                "variants": {"v1": "v1", "v2": "v2"},
                "defaultVariant": "v1",
            },
            "recommender.shadow": {
                "state": "ENABLED",
                "variants": {"none": "", "v2": "v2"},
                "defaultVariant": "v2",
            },
        }
    }
    path.write_text(json.dumps(document, indent=2))


def us(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1e6:.0f} us"


def number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def close_to(value: float | None, expected: float) -> bool:
    return value is not None and abs(value - expected) < 1e-9


def check(condition: bool, message: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {message}")


def main() -> None:
    models = train()
    rows = evaluation_set()
    # What the report must show, computed from the models directly.
    labels = {version: model.predict(rows) for version, model in models.items()}
    probas = {version: model.predict_proba(rows) for version, model in models.items()}
    expected_agreement = float(np.mean(labels["v1"] == labels["v2"]))
    check(expected_agreement == 1 - DISAGREEING / len(rows), "the evaluation set is off")
    expected_mean = float(np.mean(np.abs(probas["v1"] - probas["v2"])))
    expected_max = float(np.max(np.abs(probas["v1"] - probas["v2"])))

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        registry = write_registry(folder, models)
        write_flags(folder / "flags.json")
        api.set_provider_and_wait(
            FlagdProvider(
                resolver_type=ResolverType.FILE,
                offline_flag_source_path=str(folder / "flags.json"),
                deadline_ms=500,
            )
        )
        started = time.perf_counter()
        with ModelFlags(registry, shadow_queue=4 * REQUESTS) as flags:
            changed = 0
            for i in range(REQUESTS):
                row = rows[i % len(rows) : i % len(rows) + 1]
                model = flags.get_model("recommender", {"id": f"user-{i}"})
                check(model.shadow_version == "v2", "every request is mirrored at rate 1.0")
                label = model.predict(row)
                proba = model.predict_proba(row)
                # The caller always gets the primary's answer.
                changed += int(label[0] != labels["v1"][i % len(rows)])
                changed += int(not np.array_equal(proba, models["v1"].predict_proba(row)))
            print(
                f"1. served {REQUESTS} requests by v1, shadowed by v2; primary answers changed: "
                f"{changed}"
            )
            check(flags.flush(timeout=10.0), "shadow work did not finish in time")
            stats = flags.shadow_report("recommender")[("v1", "v2")]
        elapsed = time.perf_counter() - started
        api.shutdown()

    print(
        f"2. shadow report v1 -> v2: mirrored {stats.mirrored}, compared {stats.compared}, "
        f"dropped {stats.dropped}, errors {stats.errors}"
    )
    agreement = stats.agreement
    print(
        f"3. agreement {agreement:.1%} (known by construction: {expected_agreement:.1%})"
        if agreement is not None
        else "3. agreement: none"
    )
    print(
        f"4. predict_proba abs diff: mean {number(stats.mean_abs_diff)} (expected "
        f"{expected_mean:.4f}), max {number(stats.max_abs_diff)} (expected {expected_max:.4f})"
    )
    print(
        f"5. latency p50/p95: primary {us(stats.primary_p50)} / {us(stats.primary_p95)}, "
        f"shadow {us(stats.shadow_p50)} / {us(stats.shadow_p95)}"
    )
    print(f"done in {elapsed:.2f} s")

    check(changed == 0, "the shadow changed primary answers")
    check(stats.mirrored == stats.compared == 2 * REQUESTS, "every call is mirrored and compared")
    check(close_to(agreement, expected_agreement), "agreement differs from the known share")
    check(close_to(stats.mean_abs_diff, expected_mean), "mean abs diff differs from the models'")
    check(close_to(stats.max_abs_diff, expected_max), "max abs diff differs from the models'")
    print("agreement matches the known share: OK")


if __name__ == "__main__":
    main()
