"""``ModelFlags``: the public facade. It wires the parts together and delegates.

Which version serves, and what a failure costs, is decided in one place,
:class:`~modelflags.serving.policy.ServingPolicy`; metrics, guardrails and rollbacks live in
:mod:`modelflags.rollout`; events, the decision log and status records in
:mod:`modelflags.telemetry`. See ``docs/architecture.md`` for the path of one request.
"""

from __future__ import annotations

import contextlib
import os
import random as _random
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from openfeature.client import OpenFeatureClient

from modelflags.artifacts import Loader
from modelflags.assembly import assemble
from modelflags.errors import ModelFlagsError, ModelUnavailableError, shown
from modelflags.options import (
    AuditOptions,
    CacheOptions,
    GovernanceOptions,
    PrewarmOptions,
    ResolutionCacheOptions,
    RolloutOptions,
    ShadowOptions,
    gather,
)
from modelflags.registry import Registry
from modelflags.registry.files import as_registry
from modelflags.rollout.metrics import VersionMetrics
from modelflags.rollout.recording import finite
from modelflags.rollout.supervision import Supervisor
from modelflags.serving.context import to_context
from modelflags.serving.handle import ServedModel, ServingReason
from modelflags.serving.health import Backoff
from modelflags.serving.policy import ModelEntry
from modelflags.serving.shadow import ShadowStats
from modelflags.telemetry.events import Breach, Event, Listener
from modelflags.telemetry.status import ModelStatus, RuleState

if TYPE_CHECKING:
    from typing import Unpack

    from modelflags.rollout.actuators import Actuator
    from modelflags.rollout.canary import CanaryDriver, Stage
    from modelflags.web.app import StatusApp
    from modelflags.web.options import WebOptions
    from modelflags.web.server import StatusServer

__all__ = ["FALLBACK", "PREWARMING", "ROLLED_BACK", "ModelFlags"]

FALLBACK = ServingReason.FALLBACK
"""The ``reason`` of a handle served by the last known good version after a failure."""

ROLLED_BACK = ServingReason.ROLLED_BACK
"""The ``reason`` of a handle served by the LKG because the flagged version was rolled back."""

PREWARMING = ServingReason.PREWARMING
"""The ``reason`` of a handle served by the LKG while the chosen version loads after a change."""


class ModelFlags:
    """Serves model versions chosen by OpenFeature flags.

    ``registry`` is a path to a registry file, a :class:`~modelflags.registry.Registry`, or a
    mapping of the same shape. Flags are evaluated with ``client``, or the OpenFeature client of
    ``domain``, or the default client. Options are keyword-only:

    - ``state_dir``: persist each model's last known good version there (default: memory only).
    - ``backoff``: quarantine back-off; ``clock``: monotonic seconds (injectable for tests).
    - ``listeners``: callables receiving events (:mod:`modelflags.telemetry.events`).
    - ``loaders``: extra loaders by name (``{"onnx": fn}``, ``fn(path) -> model``).
    - ``overrides``: an override file layered over the flags (default ``MODELFLAGS_OVERRIDES``).
    - ``random``: the sampling source for shadow requests without a targeting key.
    - ``evaluation_timeout``: seconds a flag evaluation may take before the LKG answers
      (default: no bound; a bound runs evaluations on a worker thread).
    - ``allowed_stages``: the stages whose versions may serve in this process (default
      ``MODELFLAGS_ALLOWED_STAGES``, else every stage but ``archived``, which never serves); a
      flag naming another version is answered by the last known good one (reason ``POLICY``).
    - ``validate_input``: check each call's input against the model's declared input, raising
      :class:`~modelflags.errors.InputContractError` before the model sees it (default: off,
      on under pytest with the modelflags plugin).
    - ``resolution_cache``: reuse recent flag answers until the flags change (``True`` where
      provably safe; ``False``; or a :class:`~modelflags.options.ResolutionCacheOptions`).
    - ``cache``, ``shadow``, ``prewarm``, ``rollout``, ``audit``, ``governance``: the option
      groups of :mod:`modelflags.options` (``allowed_stages`` and ``validate_input`` belong to
      ``governance``). The flat options of earlier releases (``max_models=``,
      ``shadow_workers=``, ``metrics=``, ``decision_log=``, ...) map onto them.

    Safe to share between threads; one instance per process is the usual set-up. Use it as a
    context manager, or call :meth:`close`, to stop its background work.
    """

    def __init__(
        self,
        registry: str | os.PathLike[str] | Registry | Mapping[str, Any],
        *,
        client: OpenFeatureClient | None = None,
        domain: str | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        listeners: Iterable[Listener] = (),
        loaders: Mapping[str, Loader] | None = None,
        overrides: str | os.PathLike[str] | None = None,
        random: Callable[[], float] = _random.random,
        evaluation_timeout: float | None = None,
        cache: CacheOptions | None = None,
        shadow: ShadowOptions | None = None,
        prewarm: bool | PrewarmOptions = True,
        rollout: RolloutOptions | None = None,
        audit: AuditOptions | None = None,
        governance: GovernanceOptions | None = None,
        resolution_cache: bool | ResolutionCacheOptions = True,
        **flat: Any,
    ) -> None:
        if client is not None and domain is not None:
            raise ValueError("pass client= or domain=, not both")
        options = gather(
            flat,
            cache=cache,
            shadow=shadow,
            prewarm=prewarm,
            rollout=rollout,
            audit=audit,
            governance=governance,
            resolution_cache=resolution_cache,
        )
        self._parts = parts = assemble(
            as_registry(registry),
            options,
            client=client,
            domain=domain,
            state_dir=state_dir,
            backoff=backoff,
            clock=clock,
            listeners=listeners,
            loaders=loaders,
            overrides=overrides,
            random=random,
            evaluation_timeout=evaluation_timeout,
        )
        self._policy, self._keeper, self._resolver = parts.policy, parts.keeper, parts.resolver
        self._supervisor, self._events, self._shadow = parts.supervisor, parts.events, parts.shadow
        self._status_pages: list[StatusApp | StatusServer] = []
        self._closed = False

    @property
    def registry(self) -> Registry:
        """The registry being served (models whose versions come from MLflow: as of their last
        refresh)."""
        return self._parts.current_registry()

    # -- serving --------------------------------------------------------------------------------

    def get_model(
        self, name: str, user: object = None, *, timeout: float | None = None
    ) -> ServedModel:
        """The version the flag of ``name`` chooses for ``user``, loaded and ready.

        Never raises for flag or version trouble: those serve the last known good version.
        Raises :class:`ModelUnavailableError` for an unknown model, or when the last known good
        version itself cannot be loaded. ``timeout`` bounds the flag evaluation (see
        ``evaluation_timeout``).
        """
        return self._policy.serve(name, to_context(user), timeout=timeout)

    async def get_model_async(
        self, name: str, user: object = None, *, timeout: float | None = None
    ) -> ServedModel:
        """Like :meth:`get_model`: awaits the flag with OpenFeature's async API (at most
        ``timeout`` seconds) and loads on a worker thread, so the event loop never blocks."""
        return await self._policy.serve_async(name, to_context(user), timeout=timeout)

    @contextlib.contextmanager
    def override(self, **versions: str) -> Iterator[None]:
        """Pin models to versions for the block: ``with flags.override(recommender="v2"):``.

        Pins are by model name and win over flags and override files. Blocks nest: leaving one
        restores the pins that were in force when it was entered. Unknown models or versions
        raise :class:`ModelUnavailableError` at once.
        """
        for name, version in versions.items():
            model = self._policy.model(name)
            if version not in model.versions:
                raise ModelUnavailableError(
                    f"cannot pin model {name!r} to {version!r}: the registry has "
                    f"{', '.join(sorted(model.versions))}",
                    model=name,
                    version=version,
                )
        with self._resolver.pinned(versions):
            yield

    # -- metrics, outcomes, guardrails ---------------------------------------------------------

    def metrics(self, name: str) -> dict[str, VersionMetrics]:
        """Per-version metrics of model ``name`` over the sliding window.

        Metrics are kept when the model has guardrails, or with ``metrics=True``; otherwise this
        is empty.
        """
        self._policy.model(name)
        return {} if self._supervisor is None else self._supervisor.snapshot(name)

    def record_outcome(
        self, model: ServedModel | str, name: str, value: float = 1.0, *, version: str | None = None
    ) -> None:
        """Report a business outcome (a click, a conversion) of a served decision.

        Pass the handle that answered (its version and context are used), or the model name with
        ``version=``. ``value`` must be a finite number (``ValueError`` otherwise). The outcome
        feeds the per-version metrics and guardrails, and goes to OpenFeature's tracking API
        (``client.track``) so flag services that collect it see it.
        """
        if isinstance(model, ServedModel):
            model_name, served, context = model.name, model.version, model.context
        elif version is None:
            raise ValueError(
                f"record_outcome({model!r}, {name!r}, ...): pass the handle get_model "
                "returned, or version= with a model name"
            )
        else:
            model_name, served, context = model, version, None
        self._version(model_name, served)
        number = finite(value, f"outcome {shown(name)} of model {model_name!r}")
        if self._supervisor is not None:
            self._supervisor.record_outcome(model_name, served, name, number)
        self._resolver.track(name, context, number, model_name, served)

    def rollback(
        self, name: str, version: str | None = None, *, reason: str, by: str = "operator"
    ) -> list[str]:
        """Pin model ``name`` away from ``version`` (default: every non-LKG version with traffic).

        The LKG serves instead (reason ``ROLLED_BACK``) until :meth:`release`, or until the flag
        stops selecting the version. With an actuator, the flag is also rolled back at its source.
        ``by`` and ``reason`` go to the decision log.
        """
        self._version(name, version)
        return self._require_supervisor().rollback_versions(
            name, version, reason=reason, demote=self._keeper.demote, by=by
        )

    def guardrail_report(self, name: str) -> list[RuleState]:
        """The live state of every guardrail rule of model ``name``'s candidate versions: the
        estimate and its confidence interval so far, the limit, the counts and the verdict."""
        self._policy.model(name)
        return [] if self._supervisor is None else self._supervisor.report(name)

    def confirm_rollback(
        self, name: str, version: str, *, by: str = "operator", reason: str = ""
    ) -> None:
        """Carry out a proposed rollback (guardrails with ``action = "confirm"``).

        Raises :class:`InvalidActionError` when no rollback of ``version`` is waiting.
        """
        self._policy.model(name)
        self._require_supervisor().confirm(name, version, by=by, reason=reason)

    def dismiss(self, name: str, version: str, *, by: str = "operator", reason: str = "") -> None:
        """Drop a proposed rollback: ``version`` keeps serving, and is not proposed again until
        :meth:`release`. Raises :class:`InvalidActionError` when none is waiting."""
        self._policy.model(name)
        self._require_supervisor().dismiss(name, version, by=by, reason=reason)

    def check_guardrails(self) -> list[Breach]:
        """Check every model's guardrails now (a background thread does it every second)."""
        return [] if self._supervisor is None else self._supervisor.check()

    def breaches(self, name: str, version: str | None = None) -> list[Breach]:
        """Guardrail breaches of model ``name`` that fired and were not released."""
        self._policy.model(name)
        return [] if self._supervisor is None else self._supervisor.breaches(name, version)

    def canary(
        self,
        name: str,
        candidate: str,
        actuator: Actuator,
        *,
        stages: Sequence[int] | Sequence[Stage] = (1, 10, 50, 100),
        stage_seconds: float = 60.0,
        poll_s: float = 1.0,
    ) -> CanaryDriver:
        """A canary of ``candidate`` against the LKG, driven through ``actuator`` stage by stage.

        It advances while the model's guardrails hold and rolls back when one fires; call
        ``run()`` on the result (it blocks until the canary ends).
        """
        from modelflags.rollout.canary import guarded_canary

        model = self._version(name, candidate)
        if model.spec.guardrails is None:
            raise ModelFlagsError(f"model {name!r} has no guardrails: a canary needs them")
        return guarded_canary(
            self._require_supervisor(),
            actuator,
            model=name,
            flag_key=model.flag_key,
            baseline=self._keeper.health.lkg(name),
            candidate=candidate,
            stages=stages,
            stage_seconds=stage_seconds,
            poll_s=poll_s,
            promote=self._keeper.promote_proven,
        )

    def metrics_app(self, *, asgi: bool = False) -> Callable[..., Any]:
        """A WSGI app (ASGI with ``asgi=True``) serving this process's Prometheus metrics.

        Mount it on the application's ``/metrics``. It serves the registry of the
        ``PrometheusMetrics`` exporter given to this instance, else the default one (summing every
        worker's files in gunicorn's multi-process mode). Needs ``modelflags[prometheus]``.
        """
        from modelflags.telemetry.prometheus import app_for

        return app_for(() if self._supervisor is None else self._supervisor.exporters, asgi=asgi)

    def _version(self, name: str, version: str | None) -> ModelEntry:
        """Model ``name``'s entry; :class:`ModelUnavailableError` when it is unknown or has no
        ``version`` (``None``: any)."""
        model = self._policy.model(name)
        if version is not None and version not in model.versions:
            raise ModelUnavailableError(
                f"model {name!r} has no version {version!r}", model=name, version=version
            )
        return model

    def _require_supervisor(self) -> Supervisor:
        if self._supervisor is None:
            raise ModelFlagsError(
                "rollbacks need metrics: give the model guardrails, or ModelFlags(metrics=True)"
            )
        return self._supervisor

    # -- operations -----------------------------------------------------------------------------

    def status(self) -> dict[str, ModelStatus]:
        """Per model: LKG, loaded versions with bytes, quarantined versions with cause and retry,
        flag errors, rollbacks, the flag source's health and extension failures."""
        return self._parts.status()

    def release(
        self, name: str, version: str | None = None, *, by: str = "operator", reason: str = ""
    ) -> list[str]:
        """Lift the quarantine and rollback of ``version`` (or of every version) of ``name`` now;
        its breaches, proposals and metrics are forgotten, so it is judged afresh. ``by`` and
        ``reason`` go to the decision log."""
        self._policy.model(name)
        return self._parts.release(name, version, by=by, reason=reason)

    def add_listener(
        self, listener: Listener, *, types: Iterable[type[Event]] | None = None
    ) -> None:
        """Receive events (all, or those of ``types``) on a background thread."""
        self._events.add(listener, types)

    def remove_listener(self, listener: Listener) -> None:
        """Stop sending events to ``listener``."""
        self._events.remove(listener)

    def flush(self, timeout: float | None = None) -> bool:
        """Wait for background loads and prewarming, shadow calls and sampled inputs (judged for
        drift), then events and decision-log lines; False on timeout."""
        return self._parts.flush(timeout)

    def recent_decisions(
        self, limit: int = 50, *, model: str | None = None, actions: bool = False
    ) -> list[dict[str, Any]] | None:
        """The decision log's last ``limit`` entries (of ``model``; only actions with
        ``actions``) as dicts, oldest first, from a bounded read of the file's end; ``None``
        when this instance has no decision log."""
        from modelflags.telemetry.decision_reader import tail

        audit = self._parts.audit
        return None if audit is None else tail(audit.path, limit, model=model, actions=actions)

    def web_app(self, **options: Unpack[WebOptions]) -> StatusApp:
        """The status page, an ASGI app: ``app.mount("/modelflags", flags.web_app(token=...))``.
        Options: :class:`~modelflags.web.options.WebOptions`. Needs ``modelflags[web]``."""
        from modelflags.web.app import StatusApp

        app = StatusApp(self, **options)
        self._status_pages.append(app)  # closed with this instance
        return app

    def serve_status(
        self, port: int = 0, *, host: str = "127.0.0.1", **options: Unpack[WebOptions]
    ) -> StatusServer:
        """The status page on a server thread of its own, for applications that are not ASGI:
        ``.url``, ``.close()``. ``port=0`` picks a free one; options as for :meth:`web_app`."""
        from modelflags.web.server import StatusServer

        server = StatusServer(self, host=host, port=port, **options)
        self._status_pages.append(server)
        return server

    def shadow_report(self, name: str) -> dict[tuple[str, str], ShadowStats]:
        """Shadow statistics of model ``name`` per (primary, shadow) version pair."""
        self._policy.model(name)
        return self._shadow.report(name)

    def reset_shadow(self, name: str) -> None:
        """Forget the shadow statistics of model ``name``."""
        self._policy.model(name)
        self._shadow.reset(name)

    def close(self) -> None:
        """Stop background work and release resources. Idempotent."""
        if self._closed:
            return
        self._closed = True
        for page in self._status_pages:
            page.close()
        self._parts.close()

    def __enter__(self) -> ModelFlags:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
