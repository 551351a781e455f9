"""Test support for applications that use modelflags, and its pytest plugin."""
