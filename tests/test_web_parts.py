"""The parts behind the status page: snapshots off the request path, reading the decision log's
end, charts, the server thread, and the reading side of ``modelflags status --url``."""

from __future__ import annotations

import dataclasses
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sklearn.linear_model import LogisticRegression
from starlette.requests import Request

from modelflags import ModelFlags, ModelFlagsError
from modelflags.rollout.metrics import VersionMetrics
from modelflags.serving.shadow import ShadowStats
from modelflags.telemetry.decision_log import DecisionLog
from modelflags.telemetry.decision_reader import tail
from modelflags.telemetry.status import ModelStatus
from modelflags.web.auth import Credentials
from modelflags.web.charts import IntervalRow, colors, interval_chart, line_chart, split_bar
from modelflags.web.pages import Pages
from modelflags.web.remote import fetch_status, format_status
from modelflags.web.sampler import DECISIONS, Sampler
from modelflags.web.views import model_detail

from support import FakeClock, Workspace
from web_fixtures import MODEL, TOKEN, propose_rollback, serve, write_registry

# -- the sampler --------------------------------------------------------------------------------


class CountingSource:
    """Wraps a ModelFlags and counts how often the sampler reads it."""

    def __init__(self, flags: ModelFlags) -> None:
        self.flags = flags
        self.reads = 0
        self.decision_reads = 0
        self.fail = False

    def status(self) -> dict[str, ModelStatus]:
        self.reads += 1
        if self.fail:
            raise RuntimeError("the source is down")
        return self.flags.status()

    def metrics(self, name: str) -> dict[str, VersionMetrics]:
        return self.flags.metrics(name)

    def shadow_report(self, name: str) -> dict[tuple[str, str], ShadowStats]:
        return self.flags.shadow_report(name)

    def recent_decisions(
        self, limit: int = 50, *, model: str | None = None, actions: bool = False
    ) -> list[dict[str, Any]] | None:
        if not actions:  # one look at the file's end per snapshot (actions come with it)
            self.decision_reads += 1
        return self.flags.recent_decisions(limit, model=model, actions=actions)


@pytest.fixture
def flags(
    workspace: Workspace,
    trained: dict[str, LogisticRegression],
    set_flags: Callable[..., None],
    clock: FakeClock,
    tmp_path: Path,
) -> Iterator[ModelFlags]:
    set_flags(**{MODEL: "v2"})
    with ModelFlags(
        write_registry(workspace, trained),
        clock=clock,
        guardrail_interval=3600,
        decision_log=tmp_path / "decisions.jsonl",
        prewarm=False,
    ) as made:
        yield made


def test_pages_read_the_snapshot_not_the_serving_parts(flags: ModelFlags) -> None:
    """However many pages are asked for, the source is read once per snapshot."""
    source = CountingSource(flags)
    sampler = Sampler(source, interval=3600)
    try:
        for _ in range(50):
            sampler.latest()
        assert source.reads == 1
        sampler.sample_now()
        assert source.reads == 2
    finally:
        sampler.close()


@pytest.mark.slow
def test_the_history_is_bounded_and_holds_each_versions_points(flags: ModelFlags) -> None:
    """``history_s / interval`` snapshots are kept, oldest dropped first."""
    propose_rollback(flags)
    now = [0.0]
    sampler = Sampler(flags, interval=2, history_s=10, clock=lambda: now[0])
    for _ in range(8):
        now[0] += 2
        sampler.sample_now()
    history = sampler.history(MODEL)
    assert [at for at, _ in history] == [8.0, 10.0, 12.0, 14.0, 16.0]
    points = history[-1][1]
    assert (points["v1"].requests, points["v2"].requests) == (300, 300)
    assert points["v1"].outcomes["correct"] > points["v2"].outcomes["correct"]


def test_the_decision_log_is_read_only_while_someone_looks(flags: ModelFlags) -> None:
    """Snapshots skip the file read when no page was asked for in the last minute."""
    source = CountingSource(flags)
    now = [0.0]
    sampler = Sampler(source, interval=3600, clock=lambda: now[0])
    try:
        sampler.latest()
        now[0] += 30
        sampler.sample_now()
        assert source.decision_reads == 2
        now[0] += 120
        sampler.sample_now()
        assert source.decision_reads == 2
        sampler.latest()
        sampler.sample_now()
        assert source.decision_reads == 3
    finally:
        sampler.close()


@pytest.mark.slow
def test_actions_in_the_log_stay_on_the_page_after_later_decisions(flags: ModelFlags) -> None:
    """An action seen in one snapshot's read of the log is kept when the serving decisions
    written after it push it out of the lines later snapshots read."""
    propose_rollback(flags)
    sampler = Sampler(flags, interval=3600)
    sampler.latest()  # someone looks: snapshots read the log
    sampler.close()
    flags.confirm_rollback(MODEL, "v2", by="ada", reason="fell")
    flags.flush(5)
    seen = sampler.sample_now()
    assert [a["by"] for a in seen.logged_actions] == ["ada"]
    serve(flags, DECISIONS + 10, seed=9)
    flags.flush(5)
    later = sampler.sample_now()
    assert later.decisions is not None and all("action" not in e for e in later.decisions)
    assert later.logged_actions == seen.logged_actions
    data = model_detail(later, flags.registry, MODEL, [], [])
    assert [a["reason"] for a in data["logged_actions"]] == ["confirmed by ada: fell"]


def test_a_failing_snapshot_keeps_the_last_good_one_and_says_so(
    flags: ModelFlags, caplog: pytest.LogCaptureFixture
) -> None:
    """A sampling failure is logged once and shown; the page keeps the previous figures."""
    source = CountingSource(flags)
    sampler = Sampler(source, interval=3600)
    good = sampler.sample_now()
    source.fail = True
    failed = sampler.sample_now()
    sampler.sample_now()
    assert failed.at == good.at and failed.status == good.status
    assert failed.error == "RuntimeError: the source is down"
    assert sum("taking a snapshot failed" in r.getMessage() for r in caplog.records) == 1


def test_the_sampling_thread_samples_and_stops(flags: ModelFlags) -> None:
    """The thread takes snapshots on its own and is gone after close."""
    source = CountingSource(flags)
    sampler = Sampler(source, interval=0.01)
    sampler.latest()
    assert sampler.running
    done = threading.Event()
    for _ in range(500):
        if source.reads >= 3:
            done.set()
            break
        done.wait(0.01)
    assert source.reads >= 3
    sampler.close()
    assert not sampler.running
    assert not any(t.name == "modelflags-status-sampler" for t in threading.enumerate())


def test_sampler_options_are_checked(flags: ModelFlags) -> None:
    """A non-positive interval, or a history shorter than it, is refused."""
    with pytest.raises(ValueError, match="sample_s"):
        Sampler(flags, interval=0)
    with pytest.raises(ValueError, match="history_s"):
        Sampler(flags, interval=10, history_s=5)


# -- the decision log's end ---------------------------------------------------------------------


@pytest.mark.slow
def test_recent_decisions_reads_the_logs_end(flags: ModelFlags, tmp_path: Path) -> None:
    """The last entries, oldest first, actions included; ``model=`` filters."""
    propose_rollback(flags)
    flags.confirm_rollback(MODEL, "v2", by="ada", reason="fell")
    flags.flush(5)
    last = flags.recent_decisions(2)
    assert last is not None and len(last) == 2
    everything = [json.loads(x) for x in (tmp_path / "decisions.jsonl").read_text().splitlines()]
    assert last == everything[-2:]
    assert flags.recent_decisions(5, model="other") == []
    actions = [e for e in flags.recent_decisions(500) or [] if "action" in e]
    assert [(a["action"], a["by"]) for a in actions] == [("rollback", "ada")]
    only_actions = flags.recent_decisions(5, actions=True)
    assert only_actions is not None and [a["action"] for a in only_actions] == ["rollback"]


def test_actions_are_found_behind_a_flood_of_decisions(tmp_path: Path) -> None:
    """An action far behind the last entries is still read with ``actions=True``, within the
    bounded read of the file's end; decision lines are never taken for actions."""
    path = tmp_path / "decisions.jsonl"
    action = {"time": "t0", "action": "rollback", "model": "m", "version": "v2", "by": "ada"}
    decisions = [{"time": f"t{n}", "model": "m", "served": "v1"} for n in range(1, 2001)]
    path.write_text("".join(json.dumps(e) + "\n" for e in [action, *decisions]))
    assert all("action" not in e for e in tail(path, 200))
    assert tail(path, 5, actions=True) == [action]
    assert tail(path, 5, model="m", actions=True) == [action]
    assert tail(path, 5, model="other", actions=True) == []
    assert tail(path, 5, actions=True, max_bytes=10_000) == []  # beyond the bound: not read


def test_recent_decisions_is_none_without_a_decision_log(
    workspace: Workspace, trained: dict[str, LogisticRegression]
) -> None:
    """No decision log, no entries: ``None`` tells it apart from an empty log."""
    with ModelFlags(write_registry(workspace, trained)) as flags:
        assert flags.recent_decisions() is None


def test_tail_reads_a_bounded_end_and_the_rotated_file(tmp_path: Path) -> None:
    """Only ``max_bytes`` are read; a line cut by the bound is skipped; ``path.1`` completes
    a short current file; broken lines and a missing file are harmless."""
    path = tmp_path / "d.jsonl"
    with DecisionLog(path, max_bytes=2000, backups=2, salt="s") as log:
        for i in range(40):
            log.log("m", "v1", "v1", "STATIC", None, f"user-{i}")
    current = path.read_text().splitlines()
    rotated = path.with_name("d.jsonl.1").read_text().splitlines()
    assert rotated and len(current) < 20
    with_rotated = tail(path, 20)
    assert with_rotated == [json.loads(line) for line in (rotated + current)[-20:]]
    short = tail(path, 100, max_bytes=500)
    assert 0 < len(short) < 5
    assert short == [json.loads(line) for line in current[-len(short) :]]
    with path.open("a") as file:
        file.write("not json\n[1, 2]\n")
    assert tail(path, 1) == [json.loads(current[-1])]
    assert tail(tmp_path / "missing.jsonl", 5) == []
    with pytest.raises(ValueError, match="limit"):
        tail(path, 0)


def test_tail_of_one_model_reads_further_back_for_it(tmp_path: Path) -> None:
    """A model with few lines among many of another's: the read grows (within the bound) until
    its entries are found; a model whose name is inside another's is not confused with it."""
    path = tmp_path / "d.jsonl"
    with path.open("w") as file:
        for i in range(2000):
            name = "rare" if i % 500 == 0 else "busy-rare"
            file.write(json.dumps({"model": name, "n": i}) + "\n")
    assert [e["n"] for e in tail(path, 3, model="rare")] == [500, 1000, 1500]
    assert [e["n"] for e in tail(path, 2, model="busy-rare")] == [1998, 1999]
    assert [e["n"] for e in tail(path, 3, model="rare", max_bytes=20_000)] == [1500]


def test_tail_keeps_a_line_that_starts_exactly_at_the_bound(tmp_path: Path) -> None:
    """A line that begins where the bounded read begins is whole, and kept."""
    path = tmp_path / "d.jsonl"
    lines = [json.dumps({"model": "m", "n": i}) + "\n" for i in range(3)]
    path.write_text("".join(lines))
    assert tail(path, 5, max_bytes=len(lines[1]) + len(lines[2])) == [
        {"model": "m", "n": 1},
        {"model": "m", "n": 2},
    ]


# -- charts -------------------------------------------------------------------------------------


def test_charts_escape_names_and_draw_gaps() -> None:
    """Version names are text in SVG; a missing value lifts the pen; no data says so."""
    palette = colors(["<b>v1</b>", "v2"])
    chart = line_chart(
        {"<b>v1</b>": [(0.0, 1.0), (1.0, None), (2.0, 2.0)], "v2": [(0.0, 3.0)]},
        title="a & b",
        fmt=str,
        palette=palette,
        now=2.0,
    )
    assert "<b>v1</b>" not in chart and "&lt;b&gt;v1&lt;/b&gt;" in chart
    assert "a &amp; b" in chart
    assert chart.count(" M") + chart.count('"M') == 3  # two runs for v1, one for v2
    empty = line_chart({}, title="t", fmt=str, palette={}, now=0.0)
    assert "no data yet" in empty
    bar = split_bar([("v1", 3), ("v2", 1)], palette=colors(["v1", "v2"]))
    assert "v1 75%" in bar and "v2 25%" in bar


def test_intervals_are_drawn_when_the_rules_give_them() -> None:
    """A rule with a confidence interval draws it; one without draws the estimate alone."""
    palette = colors(["v1", "v2"])
    with_interval = interval_chart(
        [IntervalRow("v2", 0.4, 0.3, 0.5, 0.6, 0.54)], title="click", palette=palette
    )
    point_only = interval_chart(
        [IntervalRow("v2", 0.4, None, None, 0.6, 0.54)], title="click", palette=palette
    )
    assert 'stroke-width="3"' in with_interval and 'stroke-width="3"' not in point_only
    assert "<circle" in with_interval and "<circle" in point_only
    assert "LKG 0.6" in with_interval and "limit 0.54" in with_interval


@pytest.mark.slow
def test_the_model_page_shows_drift_figures_when_present(flags: ModelFlags) -> None:
    """Drift figures handed over in ``status().extra["drift"]`` are shown, escaped; none, no
    section."""
    propose_rollback(flags)
    sampler = Sampler(flags, interval=3600)
    snapshot = sampler.sample_now()
    status = snapshot.status[MODEL]
    drift = {"v2": {"psi": 0.31, "<b>feature</b>": "income"}}
    drifting = dataclasses.replace(
        snapshot, status={MODEL: dataclasses.replace(status, extra={"drift": drift})}
    )
    data = model_detail(drifting, flags.registry, MODEL, sampler.history(MODEL), [])
    assert data["drift"] == drift
    pages = Pages(sampler, Credentials(TOKEN), [MODEL], clock=time.time)
    scope = {
        "type": "http",
        "method": "GET",
        "path": f"/models/{MODEL}",
        "query_string": b"",
        "headers": [],
    }
    html = bytes(pages.model(Request(scope), data, "operator").body).decode()
    assert "<h2>Drift</h2>" in html and "0.31" in html
    assert "&lt;b&gt;feature&lt;/b&gt;" in html and "<b>feature</b>" not in html
    plain = model_detail(snapshot, flags.registry, MODEL, sampler.history(MODEL), [])
    assert "<h2>Drift</h2>" not in bytes(pages.model(Request(scope), plain, None).body).decode()


# -- the server thread and the remote reader ----------------------------------------------------


@pytest.mark.slow
def test_serve_status_answers_on_loopback_and_leaves_nothing_after_close(
    flags: ModelFlags,
) -> None:
    """A real server on 127.0.0.1: 401 without the token, JSON with it; after close no thread
    runs and the port refuses connections."""
    propose_rollback(flags)
    server = flags.serve_status(token=TOKEN, sample_s=3600)
    port = int(server.url.rsplit(":", 1)[1])
    assert server.url.startswith("http://127.0.0.1:")
    assert httpx.get(f"{server.url}/api/status").status_code == 401
    answer = httpx.get(f"{server.url}/api/status", headers={"Authorization": f"Bearer {TOKEN}"})
    assert answer.json()["models"][MODEL]["lkg"] == "v1"
    assert any(t.name == "modelflags-status-sampler" for t in threading.enumerate())
    server.close()
    server.close()
    names = {t.name for t in threading.enumerate()}
    assert "modelflags-status-server" not in names and "modelflags-status-sampler" not in names
    with pytest.raises(OSError), socket.create_connection(("127.0.0.1", port), timeout=1):
        pass


@pytest.mark.slow
def test_closing_modelflags_closes_its_status_server(flags: ModelFlags) -> None:
    """``flags.close()`` stops a server it started."""
    server = flags.serve_status(token=TOKEN, sample_s=3600)
    flags.close()
    assert not any(t.name == "modelflags-status-server" for t in threading.enumerate())
    with pytest.raises(httpx.TransportError):
        httpx.get(f"{server.url}/api/status", timeout=1)


def test_serve_status_refuses_a_port_in_use(flags: ModelFlags) -> None:
    """A bound port is an OSError at once, and no thread is left behind."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        with pytest.raises(OSError):
            flags.serve_status(port=taken.getsockname()[1], token=TOKEN)
    assert not any(t.name.startswith("modelflags-status") for t in threading.enumerate())


@pytest.mark.slow
def test_fetch_status_reads_a_running_page_and_formats_it(flags: ModelFlags) -> None:
    """The reading side of ``modelflags status --url``: JSON, then lines for a terminal."""
    propose_rollback(flags)
    with flags.serve_status(token=TOKEN, sample_s=3600) as server:
        data = fetch_status(server.url, TOKEN)
        with pytest.raises(ModelFlagsError, match="401 Unauthorized \\(it needs a token\\)"):
            fetch_status(server.url)
        with pytest.raises(ModelFlagsError, match="token was refused") as refused:
            fetch_status(server.url + "/", "wrong-token-0123456789")
    assert "wrong-token" not in str(refused.value)
    text = format_status(data)
    assert "churn  flag churn  LKG v1  guardrails fired" in text
    assert "answered: v1 50.0%, v2 50.0% (600 requests in 60 s)" in text
    assert "rollback of v2 proposed (max_outcome_drop" in text
    assert "flag source InMemoryProvider: ready" in text


def test_fetch_status_names_what_went_wrong() -> None:
    """No answer, another status, or JSON that is not a status page: a ModelFlagsError each."""

    def answer(request: httpx.Request) -> httpx.Response:
        if request.url.host == "down":
            raise httpx.ConnectError("refused", request=request)
        if request.url.host == "teapot":
            return httpx.Response(418, json={"error": "short and stout"})
        return httpx.Response(200, json=[1, 2])

    transport = httpx.MockTransport(answer)
    with pytest.raises(ModelFlagsError, match="http://down/api/status: no answer"):
        fetch_status("http://down", transport=transport)
    with pytest.raises(ModelFlagsError, match="HTTP 418 short and stout"):
        fetch_status("http://teapot/", transport=transport)
    with pytest.raises(ModelFlagsError, match="not a modelflags status page"):
        fetch_status("http://other", transport=transport)
