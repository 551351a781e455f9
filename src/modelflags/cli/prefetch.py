"""``modelflags prefetch REGISTRY``: download remote artifacts into the verified cache.

Run it when building an image or before a deploy so that the first request does not pay for the
download. Local artifacts are verified in place and nothing is written for them; the summary
says what was downloaded, where, and what was already there.
"""

from __future__ import annotations

import argparse
from typing import Any, TextIO

from modelflags.artifacts.remote import ProgressEvent, RemoteFetcher
from modelflags.artifacts.store import ArtifactStore
from modelflags.cli.output import FINDINGS, OK, USAGE, Output, plural, size_text
from modelflags.errors import ModelFlagsError
from modelflags.registry import load_registry

__all__ = ["add_commands"]

_BAR_WIDTH = 24


def add_commands(commands: Any, common: argparse.ArgumentParser) -> None:
    """Add ``prefetch`` to the command's subparsers."""
    parser = commands.add_parser(
        "prefetch",
        parents=[common],
        help="download and verify artifacts into the local cache",
        description=(
            "Download remote artifacts into the verified cache; verify local ones in place "
            "(nothing is written for them). Progress is drawn on stderr."
        ),
    )
    parser.add_argument("registry", metavar="REGISTRY", help="registry file (.toml, .json, .yaml)")
    parser.add_argument(
        "--model",
        action="append",
        metavar="NAME",
        help="only this model's versions (repeat for several; default: every model)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="cache folder (default: $MODELFLAGS_CACHE_DIR, else the user cache folder)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace, output: Output) -> int:
    """Fetch every version (of the named models); 1 when some failed, each listed."""
    registry = load_registry(args.registry)
    names = list(dict.fromkeys(args.model)) if args.model else sorted(registry.models)
    unknown = [name for name in names if name not in registry.models]
    if unknown:
        known = ", ".join(sorted(registry.models)) or "none"
        return output.error(f"unknown model(s) {', '.join(unknown)} (known: {known})", USAGE)
    jobs = [
        (name, version, spec)
        for name in names
        for version, spec in registry.models[name].versions.items()
    ]
    bar = _ProgressBar(output.err)
    fetcher = RemoteFetcher(cache_dir=args.cache_dir, progress=bar.update, progress_min_bytes=0)
    store = ArtifactStore(remote=fetcher)
    done: list[dict[str, Any]] = []
    failures: list[dict[str, str]] = []
    try:
        for number, (name, version, spec) in enumerate(jobs, 1):
            bar.start(f"[{number}/{len(jobs)}] {name}/{version}")
            cached = spec.is_remote and fetcher.cache_path(spec.sha256 or "").is_file()
            try:
                path = store.fetch(name, version, spec)
            except ModelFlagsError as exc:
                reason = str(exc).removeprefix(f"model {name!r} version {version!r}: ")
                failures.append({"model": name, "version": version, "error": reason})
                bar.finish("FAILED")
                continue
            if not spec.is_remote:
                action = "local"
                note = "ok (local, verified)" if spec.sha256 else "ok (local, no sha256 to check)"
            else:
                action, note = ("cached", "ok (cached)") if cached else ("downloaded", "ok")
            bar.finish(note)
            size = path.stat().st_size if path.is_file() else 0
            done.append(
                {
                    "model": name,
                    "version": version,
                    "action": action,
                    "path": str(path),
                    "size": size,
                }
            )
    finally:
        store.close()
    data = {
        "cache_dir": str(fetcher.cache_dir),
        "versions": done,
        "failures": failures,
    }
    if failures:
        output.result(data)
        output.err.write(f"{len(failures)} of {plural(len(jobs), 'version')} failed:\n")
        for failure in failures:
            output.err.write(f"  {failure['model']}/{failure['version']}: {failure['error']}\n")
        return FINDINGS
    output.result(data, [_summary(done, len(names), fetcher)])
    return OK


def _summary(done: list[dict[str, Any]], models: int, fetcher: RemoteFetcher) -> str:
    downloaded = [item for item in done if item["action"] == "downloaded"]
    cached = [item for item in done if item["action"] == "cached"]
    local = [item for item in done if item["action"] == "local"]
    parts = []
    if downloaded:
        written = sum(item["size"] for item in downloaded)
        parts.append(
            f"downloaded {plural(len(downloaded), 'artifact')} ({size_text(written)}) "
            f"into {fetcher.cache_dir}"
        )
    if cached:
        parts.append(f"{len(cached)} already in {fetcher.cache_dir}")
    if local:
        parts.append(f"{len(local)} local, verified in place (nothing written)")
    if not downloaded:
        parts.append("nothing written")
    head = f"prefetched {plural(len(done), 'version')} of {plural(models, 'model')}"
    return f"{head}: {'; '.join(dict.fromkeys(parts))}"


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
            return f"{size_text(event.received)}"
        filled = event.received * _BAR_WIDTH // event.total
        percent = event.received * 100 // event.total
        return (
            f"[{'#' * filled}{'-' * (_BAR_WIDTH - filled)}] {percent:3d}% "
            f"{size_text(event.received)}/{size_text(event.total)}"
        )
