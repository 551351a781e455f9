"""The decision log: JSON lines written in the background, hashed keys, rotation, sampling."""

from __future__ import annotations

import itertools
import json
import logging
import os
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from modelflags.telemetry.decision_log import DecisionLog

NOON = 1714564800.5  # 2024-05-01T12:00:00.5Z


def read_lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_writes_one_json_line_per_decision(tmp_path: Path) -> None:
    """Each decision is a JSON object with a UTC ISO-8601 time and a hashed key."""
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path, salt="pepper", clock=lambda: NOON) as log:
        log.log("recommender", "v3", "v2", "FALLBACK", "ValueError: bad input", "user-42")
        log.log("recommender", "v2", "v2", "TARGETING_MATCH", None, None)
        assert log.flush(5.0)

        first, second = read_lines(path)
        assert first == {
            "time": "2024-05-01T12:00:00.500000Z",
            "model": "recommender",
            "requested": "v3",
            "served": "v2",
            "reason": "FALLBACK",
            "cause": "ValueError: bad input",
            "key": log.hash_key("user-42"),
        }
        assert second["cause"] is None
        assert second["key"] is None
        assert log.written == 2


def test_keys_are_salted_sha256_and_stable_for_one_salt(tmp_path: Path) -> None:
    """The same key and salt give the same 16-byte hash; another salt gives another."""
    import hashlib

    one = DecisionLog(tmp_path / "a.jsonl", salt="pepper")
    two = DecisionLog(tmp_path / "b.jsonl", salt=b"pepper")
    other = DecisionLog(tmp_path / "c.jsonl", salt="salt")
    unsalted = [DecisionLog(tmp_path / f"{name}.jsonl") for name in "de"]
    try:
        expected = hashlib.sha256(b"pepperuser-42").digest()[:16].hex()
        assert one.hash_key("user-42") == two.hash_key("user-42") == expected
        assert len(expected) == 32
        assert one.hash_key("user-43") != expected
        assert other.hash_key("user-42") != expected
        assert unsalted[0].hash_key("user-42") != unsalted[1].hash_key("user-42")
    finally:
        for log in (one, two, other, *unsalted):
            log.close()


def test_raw_targeting_keys_are_never_written(tmp_path: Path) -> None:
    """No file the log writes, rotated ones included, holds a raw targeting key."""
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path, max_bytes=2_000, backups=5, salt="pepper") as log:
        for index in range(100):
            log.log("m", "v2", "v2", "SPLIT", None, f"secret-user-{index}@example.com")
        assert log.flush(5.0)

    files = sorted(tmp_path.iterdir())
    assert len(files) > 1
    for file in files:
        data = file.read_bytes()
        assert b"secret-user" not in data
        assert b"example.com" not in data
    assert {line["key"] for line in read_lines(path)} <= {
        log.hash_key(f"secret-user-{index}@example.com") for index in range(100)
    }


def test_rotates_by_size_and_keeps_backups_files(tmp_path: Path) -> None:
    """Past ``max_bytes`` the file moves to ``.1`` (and on); only ``backups`` old files stay."""
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path, max_bytes=1_000, backups=2, clock=lambda: NOON) as log:
        for index in range(60):
            log.log("m", f"v{index}", "v1", "SPLIT", None, None)
        assert log.flush(5.0)

    assert sorted(file.name for file in tmp_path.iterdir()) == [
        "decisions.jsonl",
        "decisions.jsonl.1",
        "decisions.jsonl.2",
    ]
    chunks = [path.with_name(f"decisions.jsonl.{n}") for n in (2, 1)] + [path]
    for file in chunks:
        assert 0 < file.stat().st_size <= 1_000
    requested = [line["requested"] for file in chunks for line in read_lines(file)]
    assert requested == [f"v{index}" for index in range(60 - len(requested), 60)]


def test_without_backups_the_file_starts_over(tmp_path: Path) -> None:
    """``backups = 0`` empties the file instead of keeping an old one."""
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path, max_bytes=500, backups=0) as log:
        for index in range(30):
            log.log("m", f"v{index}", "v1", "SPLIT", None, None)
        assert log.flush(5.0)

    assert [file.name for file in tmp_path.iterdir()] == ["decisions.jsonl"]
    assert 0 < path.stat().st_size <= 500
    assert read_lines(path)[-1]["requested"] == "v29"


def test_a_line_longer_than_max_bytes_is_shortened_and_no_file_passes_the_bound(
    tmp_path: Path,
) -> None:
    """A 5,000-character cause in a 400-byte log is cut to fit, said so in the line, counted."""
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path, max_bytes=400, backups=2, clock=lambda: NOON) as log:
        log.log("m", "v1", "v1", "STATIC", None, None)
        log.log("m", "v2", "v1", "FALLBACK", "ValueError: " + "é" * 5_000, "user-1")
        log.log("m", "v3", "v1", "ERROR", None, None)
        assert log.flush(5.0)
        assert (log.truncated, log.dropped, log.written) == (1, 0, 3)

    files = sorted(tmp_path.iterdir())
    assert all(file.stat().st_size <= 400 for file in files), [f.stat().st_size for f in files]
    lines = [line for file in files for line in read_lines(file)]
    long = next(line for line in lines if line["requested"] == "v2")
    assert long["cause"].startswith("ValueError: ééé")
    kept = len(long["cause"].split("...[")[0])
    assert long["cause"].endswith(f"...[{5_012 - kept} more characters]")
    assert long["key"] == log.hash_key("user-1")
    assert {line["requested"] for line in lines} == {"v1", "v2", "v3"}


def test_every_long_value_is_shortened_when_the_cause_alone_is_not_enough(tmp_path: Path) -> None:
    """Long version ids and model names are cut too, after the cause."""
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path, max_bytes=300, backups=0) as log:
        log.log("m" * 1_000, "v" * 1_000, "v1", "ERROR", "x" * 1_000, None)
        assert log.flush(5.0)
        assert log.truncated == 1

    assert path.stat().st_size <= 300
    (line,) = read_lines(path)
    assert line["cause"] == "...[1000 more characters]"
    assert line["requested"].endswith("more characters]")
    assert line["served"] == "v1"


def test_a_decision_that_cannot_fit_even_shortened_is_dropped_and_counted(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """With a bound below the fixed part of a line, the decision is dropped, never written."""
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path, max_bytes=60, backups=0) as log:
        log.log("m", "v1", "v1", "STATIC", None, None)
        assert log.flush(5.0)
        assert (log.dropped, log.written) == (1, 0)
    assert path.read_bytes() == b""
    assert "does not fit in max_bytes=60" in caplog.text


def test_appends_to_an_existing_file_and_counts_its_size(tmp_path: Path) -> None:
    """A new log goes on after what is there, and rotates when that is already large."""
    path = tmp_path / "decisions.jsonl"
    path.write_text('{"old": true}\n' * 50)
    with DecisionLog(path, max_bytes=800, backups=1) as log:
        log.log("m", "v1", "v1", "STATIC", None, None)
        assert log.flush(5.0)

    assert read_lines(path.with_name("decisions.jsonl.1"))[0] == {"old": True}
    assert [line["model"] for line in read_lines(path)] == ["m"]


def test_records_only_the_sampled_share(tmp_path: Path) -> None:
    """With ``sample = 0.5`` a draw below one half is kept; the others are counted."""
    draws = itertools.cycle([0.1, 0.7, 0.49, 0.5])
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path, sample=0.5, random=lambda: next(draws)) as log:
        for index in range(8):
            log.log("m", f"v{index}", "v1", "SPLIT", None, None)
        assert log.flush(5.0)

        assert [line["requested"] for line in read_lines(path)] == ["v0", "v2", "v4", "v6"]
        assert (log.unsampled, log.dropped) == (4, 0)


def test_a_full_queue_drops_and_counts_without_blocking(tmp_path: Path) -> None:
    """While the writer is stuck, decisions past the queue size are dropped at once, counted.

    The log's path is a named pipe with no reader, so the writer thread waits in ``open``.
    """
    fifo = tmp_path / "decisions.pipe"
    os.mkfifo(fifo)
    log = DecisionLog(fifo, queue_size=8)

    started = time.perf_counter()
    for index in range(10_000):
        log.log("m", f"v{index}", "v1", "SPLIT", None, "user")
    elapsed = time.perf_counter() - started

    assert elapsed < 1.0  # 10,000 calls; a blocking put would hang here instead
    assert log.dropped == 10_000 - 8
    with open(fifo, "rb") as reader:  # let the writer open the pipe and drain
        log.close()
        lines = reader.read().splitlines()
    assert [json.loads(line)["requested"] for line in lines] == [f"v{i}" for i in range(8)]


def test_decisions_after_close_are_dropped_and_counted(tmp_path: Path) -> None:
    """``log`` after ``close`` neither raises nor writes; ``close`` twice is harmless."""
    path = tmp_path / "decisions.jsonl"
    log = DecisionLog(path)
    log.close()
    log.log("m", "v1", "v1", "STATIC", None, "user")
    log.close()

    assert log.dropped == 1
    assert not path.exists() or path.read_text() == ""


def test_a_decision_that_cannot_be_written_is_dropped_and_the_writer_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A value JSON cannot hold is logged and counted; later decisions are still written."""
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path) as log:
        log.log("m", object(), "v1", "STATIC", None, None)  # type: ignore[arg-type]
        log.log("m", "v1", "v1", "STATIC", None, None)
        with caplog.at_level(logging.ERROR, logger="modelflags.telemetry.decision_log"):
            assert log.flush(5.0)

        assert log.dropped == 1
        assert [line["requested"] for line in read_lines(path)] == ["v1"]


def test_many_threads_share_one_log(tmp_path: Path) -> None:
    """Eight threads logging at once produce every line, whole."""
    path = tmp_path / "decisions.jsonl"
    barrier = threading.Barrier(8)

    with DecisionLog(path, queue_size=100_000) as log:

        def work(worker: int) -> None:
            barrier.wait()
            for index in range(500):
                log.log("m", f"{worker}-{index}", "v1", "SPLIT", None, f"user-{index}")

        threads = [threading.Thread(target=work, args=(worker,)) for worker in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert log.flush(5.0)

    lines = read_lines(path)
    assert len(lines) == 8 * 500
    assert len({line["requested"] for line in lines}) == 8 * 500


def test_refuses_a_folder_that_does_not_exist_and_bad_options(tmp_path: Path) -> None:
    """Mistakes in the set-up fail when the log is made, not later in the background."""
    with pytest.raises(FileNotFoundError, match="does not exist"):
        DecisionLog(tmp_path / "missing" / "decisions.jsonl")
    with pytest.raises(ValueError, match="sample"):
        DecisionLog(tmp_path / "decisions.jsonl", sample=1.5)


def test_an_action_is_on_disk_when_the_call_returns_whatever_waits_for_the_writer(
    tmp_path: Path,
) -> None:
    """Actions are the audit trail: written by the caller, not queued behind thousands of
    decisions; the decisions queued before still follow, none lost."""
    path = tmp_path / "decisions.jsonl"
    with DecisionLog(path, salt="s") as log:
        for n in range(5000):
            log.log("m", "v2", "v1", "FALLBACK", None, f"user-{n}")
        log.action("rollback", "m", "v2", by="ada", reason="bad answers")
        lines = [json.loads(line) for line in path.read_text().splitlines()]
        assert [(e["action"], e["by"]) for e in lines if "action" in e] == [("rollback", "ada")]
        assert log.flush(10)
    entries = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(entries) == 5001 and log.dropped == 0
