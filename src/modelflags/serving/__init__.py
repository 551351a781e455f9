"""The serving core: which version answers a request, and what happens when it cannot.

Context conversion, flag resolution (pins, then override files, then flags), the cache of loaded
versions, health (last known good version, quarantine), the handle, prewarming and shadowing.
The policy itself lives in one place, :mod:`~modelflags.serving.policy`.
"""
