"""The ``modelflags`` command.

``modelflags validate REGISTRY`` checks a registry file and prints a summary of its models and
versions. ``modelflags prefetch REGISTRY [--model NAME ...] [--cache-dir DIR]`` downloads every
remote version (or those of the named models) into the verified cache and checks the digests of
local ones, drawing a progress bar on stderr; run it when building an image or before a deploy so
the first request does not pay for the download.

Exit status: 0 when everything is fine, 1 when some version failed (each failure is listed as
``model/version: error``), 2 for an invalid registry or invalid arguments.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import TextIO

from modelflags.artifacts.remote import ProgressEvent, RemoteFetcher
from modelflags.artifacts.store import ArtifactStore
from modelflags.errors import ModelFlagsError, RegistryError
from modelflags.registry import Registry, VersionSpec, load_registry

__all__ = ["main"]

_BAR_WIDTH = 24


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command with ``argv`` (default: the process arguments); returns the exit status."""
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error argparse has already printed
        return exc.code if isinstance(exc.code, int) else 2
    if args.command == "validate":
        return _validate(args.registry, out=sys.stdout, err=sys.stderr)
    return _prefetch(args.registry, args.model, args.cache_dir, out=sys.stdout, err=sys.stderr)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="modelflags",
        description="Serve model versions chosen by OpenFeature flags: registry tools.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    validate = commands.add_parser(
        "validate", help="check a registry file and summarize it", description="Check a registry."
    )
    validate.add_argument(
        "registry", metavar="REGISTRY", help="registry file (.toml, .json, .yaml)"
    )
    prefetch = commands.add_parser(
        "prefetch",
        help="download and verify artifacts into the local cache",
        description="Download remote artifacts into the verified cache; verify local ones.",
    )
    prefetch.add_argument(
        "registry", metavar="REGISTRY", help="registry file (.toml, .json, .yaml)"
    )
    prefetch.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="only this model's versions (repeat for several; default: every model)",
    )
    prefetch.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache folder (default: $MODELFLAGS_CACHE_DIR, else the user cache folder)",
    )
    return parser


def _load(path: str, err: TextIO) -> Registry | None:
    try:
        return load_registry(path)
    except RegistryError as exc:
        print(f"modelflags: {exc}", file=err)
        return None


def _validate(path: str, *, out: TextIO, err: TextIO) -> int:
    registry = _load(path, err)
    if registry is None:
        return 2
    versions = sum(len(model.versions) for model in registry.models.values())
    remote = sum(
        spec.is_remote for model in registry.models.values() for spec in model.versions.values()
    )
    print(
        f"{path}: valid registry with {_plural(len(registry.models), 'model')} and "
        f"{_plural(versions, 'version')} ({remote} remote)",
        file=out,
    )
    for name, model in sorted(registry.models.items()):
        shadow = f", shadow flag {model.shadow_flag!r}" if model.shadow_flag else ""
        print(
            f"  {name}: {', '.join(model.versions)} (default {model.default_version}, "
            f"flag {model.flag_key!r}{shadow})",
            file=out,
        )
    return 0


def _prefetch(
    path: str, models: list[str] | None, cache_dir: str | None, *, out: TextIO, err: TextIO
) -> int:
    registry = _load(path, err)
    if registry is None:
        return 2
    names = list(dict.fromkeys(models)) if models else sorted(registry.models)
    unknown = [name for name in names if name not in registry.models]
    if unknown:
        known = ", ".join(sorted(registry.models)) or "none"
        print(f"modelflags: unknown model(s) {', '.join(unknown)} (known: {known})", file=err)
        return 2
    jobs = [
        (name, version, spec)
        for name in names
        for version, spec in registry.models[name].versions.items()
    ]
    bar = _ProgressBar(err)
    fetcher = RemoteFetcher(cache_dir=cache_dir, progress=bar.update, progress_min_bytes=0)
    store = ArtifactStore(remote=fetcher)
    failures: list[tuple[str, str, str]] = []
    try:
        for number, (name, version, spec) in enumerate(jobs, 1):
            bar.start(f"[{number}/{len(jobs)}] {name}/{version}")
            note = _note(fetcher, spec)
            try:
                store.fetch(name, version, spec)
            except ModelFlagsError as exc:
                reason = str(exc).removeprefix(f"model {name!r} version {version!r}: ")
                failures.append((name, version, reason))
                bar.finish("FAILED")
            else:
                bar.finish(note)
    finally:
        store.close()
    if failures:
        print(f"{len(failures)} of {_plural(len(jobs), 'version')} failed:", file=err)
        for name, version, reason in failures:
            print(f"  {name}/{version}: {reason}", file=err)
        return 1
    print(
        f"prefetched {_plural(len(jobs), 'version')} of {_plural(len(names), 'model')} "
        f"into {fetcher.cache_dir}",
        file=out,
    )
    return 0


def _note(fetcher: RemoteFetcher, spec: VersionSpec) -> str:
    if not spec.is_remote:
        return "ok (local, verified)" if spec.sha256 else "ok (local, no sha256 to check)"
    assert spec.sha256 is not None
    return "ok (cached)" if fetcher.cache_path(spec.sha256).is_file() else "ok"


class _ProgressBar:
    """A one-line text progress bar for a sequence of downloads.

    On a terminal the line is redrawn in place; elsewhere (logs, pipes) only each download's final
    line is written. Not safe to share between threads.
    """

    def __init__(self, stream: TextIO) -> None:
        self._stream = stream
        self._live = stream.isatty()
        self._label = ""
        self._last: ProgressEvent | None = None

    def start(self, label: str) -> None:
        """Begin the line of one download."""
        self._label = label
        self._last = None
        if self._live:
            self._stream.write(f"\r\x1b[2K{label} ...")
            self._stream.flush()

    def update(self, event: ProgressEvent) -> None:
        """Record ``event`` (the fetcher's progress callback); redraw on a terminal."""
        self._last = event
        if self._live:
            self._stream.write(f"\r\x1b[2K{self._label} {self._bar()}")
            self._stream.flush()

    def finish(self, status: str) -> None:
        """End the line with ``status``."""
        bar = f" {self._bar()}" if self._last is not None else ""
        prefix = "\r\x1b[2K" if self._live else ""
        self._stream.write(f"{prefix}{self._label}{bar} {status}\n")
        self._stream.flush()

    def _bar(self) -> str:
        event = self._last
        if event is None:
            return ""
        if not event.total:
            return f"{_size(event.received)}"
        filled = event.received * _BAR_WIDTH // event.total
        percent = event.received * 100 // event.total
        return (
            f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {percent:3d}% "
            f"{_size(event.received)}/{_size(event.total)}"
        )


def _size(count: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


if __name__ == "__main__":
    raise SystemExit(main())
