"""Telemetry: events, the decision log, status records, histograms, and exporters.

The lowest layer above the registry: every other layer may report through it, and it decides
nothing.
"""
