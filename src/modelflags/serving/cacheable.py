"""Which providers' answers may be reused, and for which flags: what the resolution cache trusts.

A flag's answer may be reused only while nothing but the evaluation context decides it and the
provider announces every change of its flags with an event. This module knows the providers that
do, by their module and class (it never imports a provider package), and looks at a flag's
definition through the provider when it can:

- flagd in FILE and in-process modes: its flag file or sync stream is announced by
  ``PROVIDER_CONFIGURATION_CHANGED``. A flag without targeting (or disabled) answers every context
  alike (:attr:`Mode.STATIC`); a flag whose targeting reads ``$flagd.timestamp`` (or reads a
  variable through an expression, or the whole data object) depends on time and is never reused
  (:attr:`Mode.NEVER`); other rules are pure functions of the context, ``fractional`` splits
  included (a hash of the flag and targeting keys) (:attr:`Mode.CONTEXT`). flagd's RPC mode keeps
  a cache of its own and is not reused here.
- OpenFeature's in-memory provider: a flag without a ``context_evaluator`` is static; one with an
  evaluator runs arbitrary code and is never reused. Its flags change only when the provider is
  replaced (a ready event) or through :class:`modelflags.testing.InMemoryFlags`, which announces
  every change.
- The override-file provider (``modelflags-provider-overrides``) used as the provider: overridden
  flags follow rules on the context; the others are classified through its delegate.
- Unleash: it counts every evaluation (the variant counts its dashboard shows, impression events),
  and its strategies may use random stickiness or the current time, which its provider does not
  let anyone see. It is reused only when the user vouches for it (``trusted``), and then only for
  contexts with a targeting key (without one, Unleash's default stickiness is random).

Any other provider is reused only when the user sets a TTL (a staleness bound) or vouches for it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

__all__ = ["Mode", "Verdict", "classify", "uses_time"]

logger = logging.getLogger(__name__)


class Mode(enum.Enum):
    """How a flag's answers may be reused."""

    NEVER = "never"
    """Not at all: the answer may depend on time, randomness or unknown code."""
    STATIC = "static"
    """For every context alike: the flag has no rules."""
    CONTEXT = "context"
    """For the same targeting key and attributes."""
    KEYED = "keyed"
    """For the same targeting key and attributes, and only when there is a targeting key."""


@dataclass(frozen=True, slots=True)
class Verdict:
    """What may be reused of one flag's answers, and whether entries need a staleness bound.

    ``bounded``: the provider announces no changes, so answers are kept at most the TTL.
    ``why``: a short explanation for logs and ``status()``.
    """

    mode: Mode
    bounded: bool
    why: str


_FLAGD = "openfeature.contrib.provider.flagd.provider.FlagdProvider"
_IN_MEMORY = "openfeature.provider.in_memory_provider.InMemoryProvider"
_OVERRIDES = "modelflags_provider_overrides.provider.OverridesProvider"
_UNLEASH = "openfeature.contrib.provider.unleash.UnleashProvider"
_NO_OP = "openfeature.provider.no_op_provider.NoOpProvider"
_FLAGD_EVENT_MODES = frozenset({"file", "in-process"})


def _name(provider: object) -> str:
    kind = type(provider)
    return f"{kind.__module__}.{kind.__qualname__}"


def classify(
    provider: object, flag_key: str, *, ttl: float | None, trusted: Collection[str] = ()
) -> Verdict:
    """How answers of ``provider`` for ``flag_key`` may be reused now.

    Subclasses of the providers named here are not trusted: they may answer differently.
    ``trusted`` holds provider names (their metadata name, such as ``"Unleash Provider"``) the
    user vouches for; ``ttl`` allows bounded reuse for providers that announce nothing.
    """
    name = _name(provider)
    try:
        verdict = _known(name, provider, flag_key, ttl=ttl, trusted=trusted)
    except Exception:  # a provider that changed its internals: never guess
        logger.debug("cannot classify flag %r of %s", flag_key, name, exc_info=True)
        verdict = Verdict(Mode.NEVER, False, f"{name} could not be inspected")
    if verdict is not None:
        return verdict
    if name == _NO_OP:
        return Verdict(Mode.NEVER, False, "no provider is set")
    if _metadata_name(provider) in trusted:
        return Verdict(Mode.CONTEXT, False, "trusted by the user")
    if ttl is not None:
        return Verdict(Mode.CONTEXT, True, f"no change events: kept at most {ttl:g} s")
    return Verdict(Mode.NEVER, False, f"{type(provider).__name__} announces no changes")


def _known(
    name: str, provider: Any, flag_key: str, *, ttl: float | None, trusted: Collection[str]
) -> Verdict | None:
    if name == _FLAGD:
        mode = str(getattr(provider.config.resolver, "value", provider.config.resolver))
        if mode not in _FLAGD_EVENT_MODES:
            return None  # RPC mode: a cache of its own; reused only with a TTL
        flag = provider.resolver.evaluator._flag_store.get_flag(flag_key)
        if flag is None:
            return Verdict(Mode.NEVER, False, f"flag {flag_key!r} is not defined")
        if flag.state == "DISABLED" or not flag.targeting:
            return Verdict(Mode.STATIC, False, "flagd flag without rules")
        if uses_time(flag.targeting):
            return Verdict(Mode.NEVER, False, "flagd rules read the time")
        return Verdict(Mode.CONTEXT, False, "flagd rules on the context")
    if name == _IN_MEMORY:
        flag = provider._flags.get(flag_key)
        if flag is None:
            return Verdict(Mode.NEVER, False, f"flag {flag_key!r} is not defined")
        if flag.context_evaluator is not None and str(flag.state) != "DISABLED":
            return Verdict(Mode.NEVER, False, "an in-memory flag with a context evaluator")
        return Verdict(Mode.STATIC, False, "in-memory flag without rules")
    if name == _OVERRIDES:
        if flag_key in provider.overrides:
            return Verdict(Mode.CONTEXT, False, "override rules on the context")
        delegate = provider.delegate
        if delegate is None:
            return Verdict(Mode.NEVER, False, f"flag {flag_key!r} is not defined")
        inner = classify(delegate, flag_key, ttl=ttl, trusted=trusted)
        if inner.mode is Mode.STATIC:  # an override set later names the flag: keyed from now on
            return Verdict(Mode.CONTEXT, inner.bounded, inner.why)
        return inner
    if name == _UNLEASH:
        if _metadata_name(provider) in trusted:
            return Verdict(Mode.KEYED, False, "Unleash, trusted by the user")
        return Verdict(Mode.NEVER, False, "Unleash counts every evaluation")
    return None


def _metadata_name(provider: Any) -> str | None:
    try:
        return str(provider.get_metadata().name)
    except Exception:
        return None


def uses_time(rule: object) -> bool:
    """True when a flagd (JSON Logic) rule may read the time of evaluation.

    flagd adds ``$flagd.timestamp`` to the data a rule sees. A rule reads it through ``var`` with
    that path, with a path computed by an expression (which could be that path), or with the empty
    path or ``$flagd`` (the whole object). Anything else is a pure function of the context.
    """
    stack = [rule]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, dict):
            for operator, operand in item.items():
                if operator == "var" and _reads_time(operand):
                    return True
                stack.append(operand)
    return False


def _reads_time(operand: object) -> bool:
    path = operand[0] if isinstance(operand, list) and operand else operand
    if isinstance(operand, list) and not operand:
        return True  # {"var": []}: the whole data object
    if isinstance(path, int | float) and not isinstance(path, bool):
        return False
    if not isinstance(path, str):
        return True  # a computed path could name the timestamp
    return path in ("", "$flagd") or path.startswith("$flagd.timestamp")
