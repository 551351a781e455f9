"""The OpenTelemetry metrics bridge, at the import path of earlier releases.

See :mod:`modelflags.telemetry.otel`.
"""

from modelflags.telemetry.otel import *  # noqa: F403
from modelflags.telemetry.otel import __all__ as __all__
