"""One process of a small fleet: serves real calls through ModelFlags into Prometheus files.

Run by ``tests/test_prometheus.py`` with ``PROMETHEUS_MULTIPROC_DIR`` set::

    python tests/prometheus_worker.py REGISTRY MODEL VERSION:CALLS:CLICKS [...]

For each ``VERSION:CALLS:CLICKS`` the flag of MODEL is set to VERSION and CALLS predictions are
served, the first CLICKS of them with a click outcome of 1 and the others with 0. Prints the
process id. Exits with 2 when prometheus-client is not in multi-process mode.
"""

from __future__ import annotations

import os
import sys

import numpy as np
from openfeature import api

from modelflags import ModelFlags
from modelflags.telemetry.prometheus import PrometheusMetrics, multiprocess_mode

from support import memory_provider


def main(argv: list[str]) -> int:
    registry, model, plans = argv[1], argv[2], argv[3:]
    if not multiprocess_mode():
        print("prometheus_client is not in multi-process mode", file=sys.stderr)
        return 2
    features = np.random.RandomState(0).rand(40, 3)
    with ModelFlags(registry, metrics_exporters=[PrometheusMetrics()], prewarm=False) as flags:
        for plan in plans:
            version, calls, clicks = plan.split(":")
            api.set_provider_and_wait(memory_provider({model: version}))
            for i in range(int(calls)):
                handle = flags.get_model(model, f"user-{i}")
                handle.predict(features)
                flags.record_outcome(handle, "click", 1.0 if i < int(clicks) else 0.0)
    api.shutdown()
    print(os.getpid())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
