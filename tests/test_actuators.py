"""Actuators change a flag at its source: a flagd flag file read by the real flagd provider in FILE
mode, and the admin API of a real Unleash 8 (tests marked ``unleash``)."""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import stat
import threading
import uuid
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from openfeature import api
from openfeature.contrib.provider.flagd import FlagdProvider
from openfeature.contrib.provider.flagd.config import ResolverType
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent

from modelflags.errors import ModelFlagsError
from modelflags.rollout.actuators import Actuator, ActuatorError, FlagdFileActuator, UnleashActuator

from support import wait_until
from support.unleash import StackInfo, UnleashAdmin

FLAG_FILE: dict[str, Any] = {
    "$schema": "https://flagd.dev/schema/v0/flags.json",
    "flags": {
        "recommender": {
            "state": "ENABLED",
            "variants": {"v1": "v1"},
            "defaultVariant": "v1",
            "targeting": {},
        },
        "ranker": {
            "state": "ENABLED",
            "variants": {"a": "a", "b": "b"},
            "defaultVariant": "a",
            "targeting": {"if": [{"$ref": "isBeta"}, "b", "a"]},
        },
    },
    "$evaluators": {"isBeta": {"==": [{"var": "plan"}, "beta"]}},
}


class Reloads:
    """Counts the provider's configuration-changed events: one per reload of the flag file."""

    def __init__(self) -> None:
        self._count = 0
        self._changed = threading.Condition()

    def __call__(self, details: EventDetails) -> None:
        with self._changed:
            self._count += 1
            self._changed.notify_all()

    @property
    def count(self) -> int:
        with self._changed:
            return self._count

    def wait_beyond(self, count: int, timeout: float = 5.0) -> None:
        """Return once more than ``count`` reloads happened."""
        with self._changed:
            if not self._changed.wait_for(lambda: self._count > count, timeout):
                raise AssertionError(f"the flag file was not reloaded within {timeout} s")


@pytest.fixture
def flag_path(tmp_path: Path) -> Path:
    path = tmp_path / "flags.json"
    path.write_text(json.dumps(FLAG_FILE, indent=2))
    return path


@pytest.fixture
def flagd(flag_path: Path) -> Iterator[Reloads]:
    """The real flagd provider in FILE mode on ``flag_path``; yields its reload counter."""
    reloads = Reloads()
    api.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, reloads)
    api.set_provider_and_wait(
        FlagdProvider(
            resolver_type=ResolverType.FILE,
            offline_flag_source_path=str(flag_path),
            deadline_ms=50,
        )
    )
    reloads.wait_beyond(0)  # the first load
    yield reloads
    api.remove_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, reloads)
    api.shutdown()
    api.clear_providers()


def served(flag: str, users: range, default: str = "v1") -> Counter[str]:
    client = api.get_client()
    return Counter(
        client.get_string_details(flag, default, EvaluationContext(targeting_key=f"user-{i}")).value
        for i in users
    )


# -- flagd files --------------------------------------------------------------------------------


@pytest.mark.slow
def test_actuators_satisfy_the_protocol(flag_path: Path) -> None:
    """Both actuators are Actuators, and ActuatorError is a ModelFlagsError."""
    assert isinstance(FlagdFileActuator(flag_path), Actuator)
    with UnleashActuator("http://127.0.0.1:9", "token") as unleash:
        assert isinstance(unleash, Actuator)
    assert issubclass(ActuatorError, ModelFlagsError)


@pytest.mark.slow
def test_flagd_split_sends_about_ten_percent_to_the_candidate(
    flag_path: Path, flagd: Reloads
) -> None:
    """A 90/10 split reaches about 10 % of 2,000 users once the provider reloads the file."""
    assert served("recommender", range(2000)) == Counter({"v1": 2000})
    before = flagd.count
    FlagdFileActuator(flag_path).set_split("recommender", {"v1": 90, "v2": 10})
    flagd.wait_beyond(before)

    counts = served("recommender", range(2000))
    assert set(counts) == {"v1", "v2"}
    assert abs(counts["v2"] / 2000 - 0.10) <= 0.02
    flag = json.loads(flag_path.read_text())["flags"]["recommender"]
    assert flag["targeting"] == {"fractional": [["v1", 90], ["v2", 10]]}
    assert flag["variants"] == {"v1": "v1", "v2": "v2"}
    assert flag["defaultVariant"] == "v1"


def test_flagd_rollback_sends_everyone_to_the_baseline(flag_path: Path, flagd: Reloads) -> None:
    """After a rollback every user, with or without a targeting key, gets the baseline."""
    actuator = FlagdFileActuator(flag_path)
    actuator.set_split("recommender", {"v1": 0, "v2": 100})
    actuator.rollback("recommender", to_version="v1", from_version="v2")
    flag = json.loads(flag_path.read_text())["flags"]["recommender"]
    assert (flag["defaultVariant"], flag["targeting"], flag["state"]) == ("v1", {}, "ENABLED")

    wait_until(
        lambda: served("recommender", range(200), "none") == Counter({"v1": 200}),
        5.0,
        "everyone on the baseline",
    )
    assert api.get_client().get_string_value("recommender", "none") == "v1"


def test_flagd_edit_keeps_other_flags_and_file_keys(flag_path: Path, flagd: Reloads) -> None:
    """Only the named flag changes; other flags, $schema, $evaluators and file mode are kept."""
    flag_path.chmod(0o640)
    before = flagd.count
    FlagdFileActuator(flag_path).set_split("recommender", {"v1": 50, "v2": 50})
    flagd.wait_beyond(before)

    document = json.loads(flag_path.read_text())
    expected = copy.deepcopy(FLAG_FILE)
    expected["flags"]["recommender"].update(
        variants={"v1": "v1", "v2": "v2"},
        targeting={"fractional": [["v1", 50], ["v2", 50]]},
    )
    assert document == expected
    assert list(document) == list(FLAG_FILE)
    assert stat.S_IMODE(flag_path.stat().st_mode) == 0o640
    beta = EvaluationContext(targeting_key="u", attributes={"plan": "beta"})
    assert api.get_client().get_string_value("ranker", "none", beta) == "b"
    assert sorted(p.name for p in flag_path.parent.iterdir() if p.suffix == ".tmp") == []


@pytest.fixture
def linked_flag_path(flag_path: Path) -> Path:
    """``flags.json`` made a relative symbolic link to ``releases/flags-1.json``."""
    target = flag_path.parent / "releases" / "flags-1.json"
    target.parent.mkdir()
    flag_path.replace(target)
    flag_path.symlink_to(Path("releases") / "flags-1.json")
    return flag_path


def test_flagd_writes_through_a_symlinked_flag_file(linked_flag_path: Path, flagd: Reloads) -> None:
    """The link stays a link to the same file; that file gets the change and flagd serves it."""
    target = linked_flag_path.parent / "releases" / "flags-1.json"
    before = flagd.count
    FlagdFileActuator(linked_flag_path).set_split("recommender", {"v1": 0, "v2": 100})
    flagd.wait_beyond(before)

    assert linked_flag_path.is_symlink()
    assert os.readlink(linked_flag_path) == os.path.join("releases", "flags-1.json")
    assert json.loads(target.read_text())["flags"]["recommender"]["defaultVariant"] == "v2"
    assert served("recommender", range(50)) == Counter({"v2": 50})
    assert sorted(p.name for p in target.parent.iterdir()) == ["flags-1.json", "flags-1.json.lock"]
    assert sorted(p.name for p in linked_flag_path.parent.iterdir()) == ["flags.json", "releases"]


def test_flagd_full_share_is_written_as_the_default_variant(flag_path: Path) -> None:
    """A 100/0 split is written as the plain default, with the 0 % version kept as a variant."""
    FlagdFileActuator(flag_path).set_split("recommender", {"v1": 0, "v2": 100})
    flag = json.loads(flag_path.read_text())["flags"]["recommender"]
    assert flag == {
        "state": "ENABLED",
        "variants": {"v1": "v1", "v2": "v2"},
        "defaultVariant": "v2",
        "targeting": {},
    }


def test_flagd_versions_are_matched_by_variant_value(flag_path: Path) -> None:
    """A variant whose value is the version id is reused under its own name."""
    document = json.loads(flag_path.read_text())
    document["flags"]["recommender"]["variants"] = {"stable": "v1", "next": "v2"}
    document["flags"]["recommender"]["defaultVariant"] = "stable"
    flag_path.write_text(json.dumps(document))

    actuator = FlagdFileActuator(flag_path)
    actuator.set_split("recommender", {"v1": 75, "v2": 25})
    flag = json.loads(flag_path.read_text())["flags"]["recommender"]
    assert flag["targeting"] == {"fractional": [["stable", 75], ["next", 25]]}
    actuator.rollback("recommender", to_version="v1", from_version="v2")
    flag = json.loads(flag_path.read_text())["flags"]["recommender"]
    assert (flag["defaultVariant"], flag["variants"]) == ("stable", {"stable": "v1", "next": "v2"})


def test_flagd_missing_flag_is_an_actuator_error_naming_the_path(flag_path: Path) -> None:
    """A flag the file does not have raises ActuatorError with the path, and writes nothing."""
    before = flag_path.read_bytes()
    with pytest.raises(ActuatorError) as caught:
        FlagdFileActuator(flag_path).rollback("churn", to_version="v1", from_version="v2")
    assert str(flag_path) in str(caught.value)
    assert "churn" in str(caught.value)
    assert (caught.value.flag_key, caught.value.actuator) == ("churn", "flagd-file")
    assert flag_path.read_bytes() == before


@pytest.mark.parametrize(
    "content",
    [None, "{not json", "[1, 2]", '{"flags": []}'],
    ids=["missing", "invalid-json", "not-an-object", "flags-not-an-object"],
)
def test_flagd_unreadable_file_is_an_actuator_error_naming_the_path(
    tmp_path: Path, content: str | None
) -> None:
    """A missing or malformed flag file raises ActuatorError naming the file."""
    path = tmp_path / "flags.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ActuatorError, match=re.escape(str(path))) as caught:
        FlagdFileActuator(path).set_split("recommender", {"v1": 90, "v2": 10})
    assert caught.value.status is None
    if content is not None:
        assert path.read_text() == content


def test_flagd_variant_with_another_value_is_an_actuator_error(flag_path: Path) -> None:
    """A variant named like the version but serving another value is refused, not overwritten."""
    document = json.loads(flag_path.read_text())
    document["flags"]["recommender"]["variants"] = {"v1": "v1", "v2": "v9"}
    flag_path.write_text(json.dumps(document))
    with pytest.raises(ActuatorError, match="'v9'"):
        FlagdFileActuator(flag_path).set_split("recommender", {"v1": 50, "v2": 50})


def test_flagd_back_to_back_writes_move_the_modification_time_forward(flag_path: Path) -> None:
    """Each write gets a newer mtime, so a file watcher polling mtimes sees every one."""
    actuator = FlagdFileActuator(flag_path)
    mtimes = [flag_path.stat().st_mtime_ns]
    for percent in (1, 10, 50, 100):
        actuator.set_split("recommender", {"v1": 100 - percent, "v2": percent})
        mtimes.append(flag_path.stat().st_mtime_ns)
    assert all(later > earlier for earlier, later in itertools.pairwise(mtimes))


def test_flagd_concurrent_writers_lose_no_change(flag_path: Path) -> None:
    """Writers on two threads editing two flags take turns: both flags end as last written."""

    def write(flag: str, versions: tuple[str, str]) -> None:
        actuator = FlagdFileActuator(flag_path)
        for percent in range(1, 31):
            actuator.set_split(flag, {versions[0]: 100 - percent, versions[1]: percent})

    threads = [
        threading.Thread(target=write, args=("recommender", ("v1", "v2"))),
        threading.Thread(target=write, args=("ranker", ("a", "b"))),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    flags = json.loads(flag_path.read_text())["flags"]
    assert flags["recommender"]["targeting"] == {"fractional": [["v1", 70], ["v2", 30]]}
    assert flags["ranker"]["targeting"] == {"fractional": [["a", 70], ["b", 30]]}


@pytest.mark.parametrize(
    "weights",
    [{}, {"v1": 90, "v2": 20}, {"v1": -10, "v2": 110}, {"v1": 99.5, "v2": 0.5}, {"": 100}],
    ids=["empty", "over-100", "negative", "not-integers", "empty-version"],
)
def test_invalid_weights_raise_value_error(flag_path: Path, weights: dict[str, Any]) -> None:
    """Weights must be integer percents of named versions summing to 100."""
    transport = httpx.MockTransport(lambda request: httpx.Response(500))
    with (
        httpx.Client(transport=transport) as client,
        UnleashActuator("http://unleash.test", "t", client=client) as unleash,
    ):
        for actuator in (FlagdFileActuator(flag_path), unleash):
            with pytest.raises(ValueError):
                actuator.set_split("recommender", weights)


# -- Unleash without a server -------------------------------------------------------------------


def test_unleash_requests_carry_the_token_and_exact_weights() -> None:
    """A split creates a flexibleRollout strategy with per-mille weights, then turns the flag on."""
    seen: list[tuple[str, str, str | None, Any]] = []

    def answer(request: httpx.Request) -> httpx.Response:
        body = json.loads(request.content) if request.content else None
        seen.append((request.method, request.url.path, request.headers.get("authorization"), body))
        if request.method == "GET":
            return httpx.Response(200, json=[])
        return httpx.Response(200, json={})

    with (
        httpx.Client(transport=httpx.MockTransport(answer)) as client,
        UnleashActuator(
            "http://unleash.test/", "admin-token", environment="production", client=client
        ) as actuator,
    ):
        actuator.set_split("churn", {"v1": 90, "v2": 7, "v3": 3})

    base = "/api/admin/projects/default/features/churn/environments/production"
    assert [(method, path) for method, path, _, _ in seen] == [
        ("GET", f"{base}/strategies"),
        ("POST", f"{base}/strategies"),
        ("POST", f"{base}/on"),
    ]
    assert {token for _, _, token, _ in seen} == {"admin-token"}
    strategy = seen[1][3]
    assert strategy["name"] == "flexibleRollout"
    assert strategy["parameters"] == {"rollout": "100", "groupId": "churn", "stickiness": "default"}
    assert [(v["name"], v["weight"], v["weightType"]) for v in strategy["variants"]] == [
        ("v1", 900, "fix"),
        ("v2", 70, "fix"),
        ("v3", 30, "variable"),
    ]
    assert {v["payload"]["value"] for v in strategy["variants"]} == {"v1", "v2", "v3"}
    assert {v["stickiness"] for v in strategy["variants"]} == {"default"}


class RecordingAdmin:
    """A real HTTP server on 127.0.0.1 that records each request's method and raw path, and
    answers like an Unleash admin API with one flexibleRollout strategy (id ``s/1``)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, str]] = []
        recorded = self.requests

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                recorded.append((self.command, self.path))
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = b"[]"
                if self.command == "GET":
                    body = json.dumps([{"id": "s/1", "name": "flexibleRollout"}]).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _answer

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    def __enter__(self) -> RecordingAdmin:
        self.thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(5.0)


@pytest.mark.slow
@pytest.mark.parametrize(
    ("project", "flag_key", "environment", "escaped"),
    [
        (
            "default",
            "../../../api/admin/user-admin",
            "development",
            "/api/admin/projects/default/features/..%2F..%2F..%2Fapi%2Fadmin%2Fuser-admin"
            "/environments/development",
        ),
        (
            "default",
            "..",
            "development",
            "/api/admin/projects/default/features/%2E%2E/environments/development",
        ),
        (
            "team a",
            "rec?x=1#y",
            "prod/eu",
            "/api/admin/projects/team%20a/features/rec%3Fx%3D1%23y/environments/prod%2Feu",
        ),
    ],
    ids=["parent segments", "dot segment", "reserved characters"],
)
def test_unleash_path_segments_are_escaped(
    project: str, flag_key: str, environment: str, escaped: str
) -> None:
    """Each name is one path segment on the wire: it can never climb to another admin URL."""
    with (
        RecordingAdmin() as admin,
        UnleashActuator(admin.url, "token", project=project, environment=environment) as actuator,
    ):
        actuator.rollback(flag_key, to_version="v1", from_version="v2")
    assert admin.requests == [
        ("GET", f"{escaped}/strategies"),
        ("PUT", f"{escaped}/strategies/s%2F1"),
        ("POST", f"{escaped}/on"),
    ]


def test_unleash_connection_failure_is_an_actuator_error() -> None:
    """A transport error becomes an ActuatorError naming the request, without a status."""

    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    with (
        httpx.Client(transport=httpx.MockTransport(refuse)) as client,
        UnleashActuator("http://unleash.test", "secret-token", client=client) as actuator,
        pytest.raises(
            ActuatorError, match=re.escape("GET http://unleash.test/api/admin")
        ) as caught,
    ):
        actuator.rollback("churn", to_version="v1", from_version="v2")
    assert caught.value.status is None
    assert caught.value.actuator == "unleash"
    assert "secret-token" not in str(caught.value)


# -- Unleash, the real server -------------------------------------------------------------------


@pytest.fixture
def unleash_flag(unleash_admin: UnleashAdmin, flag_name: str) -> str:
    """A new flag with a unique name, archived and deleted afterwards."""
    unleash_admin.create_flag(flag_name)
    return flag_name


@pytest.fixture
def actuator(unleash_stack: StackInfo) -> Iterator[UnleashActuator]:
    with UnleashActuator(unleash_stack.url, unleash_stack.admin_token) as actuator:
        yield actuator


def environment(admin: Any, flag: str, name: str = "development") -> dict[str, Any]:
    found: dict[str, Any] = next(
        env for env in admin.get_flag(flag)["environments"] if env["name"] == name
    )
    return found


def variants(strategy: dict[str, Any]) -> list[tuple[str, int, str, str]]:
    return [
        (v["name"], v["weight"], v["weightType"], v["payload"]["value"])
        for v in strategy["variants"]
    ]


@pytest.mark.slow
@pytest.mark.unleash
def test_unleash_split_shows_exact_weights_in_the_admin_api(
    unleash_admin: UnleashAdmin, actuator: UnleashActuator, unleash_flag: str
) -> None:
    """A 90/10 split is stored as strategy variants of 900 and 100 per mille, flag on."""
    actuator.set_split(unleash_flag, {"v1": 90, "v2": 10})
    env = environment(unleash_admin, unleash_flag)
    assert env["enabled"] is True
    [strategy] = env["strategies"]
    assert strategy["name"] == "flexibleRollout"
    assert strategy["parameters"]["rollout"] == "100"
    assert variants(strategy) == [("v1", 900, "fix", "v1"), ("v2", 100, "variable", "v2")]
    assert environment(unleash_admin, unleash_flag, "production")["enabled"] is False


@pytest.mark.slow
@pytest.mark.unleash
def test_unleash_split_updates_the_same_strategy_in_place(
    unleash_admin: UnleashAdmin, actuator: UnleashActuator, unleash_flag: str
) -> None:
    """Each stage rewrites the variants of one strategy; nothing piles up."""
    actuator.set_split(unleash_flag, {"v1": 99, "v2": 1})
    [first] = environment(unleash_admin, unleash_flag)["strategies"]
    actuator.set_split(unleash_flag, {"v1": 50, "v2": 50})
    [second] = environment(unleash_admin, unleash_flag)["strategies"]
    assert second["id"] == first["id"]
    assert variants(second) == [("v1", 500, "fix", "v1"), ("v2", 500, "variable", "v2")]


@pytest.mark.slow
@pytest.mark.unleash
def test_unleash_rollback_leaves_the_last_good_version_at_100_percent(
    unleash_stack: StackInfo,
    unleash_admin: UnleashAdmin,
    actuator: UnleashActuator,
    unleash_flag: str,
) -> None:
    """A rollback leaves one variant, the LKG at 1000 per mille, in every strategy that served
    the abandoned version, and the flag stays on."""
    actuator.set_split(unleash_flag, {"v1": 50, "v2": 50})
    beta = {
        "name": "default",
        "constraints": [{"contextName": "userId", "operator": "IN", "values": ["beta-1"]}],
        "parameters": {},
        "variants": [
            {
                "name": "v2",
                "weight": 1000,
                "weightType": "variable",
                "stickiness": "default",
                "payload": {"type": "string", "value": "v2"},
            }
        ],
    }
    created = httpx.post(
        f"{unleash_stack.url}/api/admin/projects/default/features/{unleash_flag}"
        "/environments/development/strategies",
        json=beta,
        headers={"Authorization": unleash_stack.admin_token},
        timeout=10,
    )
    assert created.status_code == 200, created.text

    actuator.rollback(unleash_flag, to_version="v1", from_version="v2")
    env = environment(unleash_admin, unleash_flag)
    assert env["enabled"] is True
    assert [variants(s) for s in env["strategies"]] == [[("v1", 1000, "variable", "v1")]] * 2
    by_name = {s["name"]: s for s in env["strategies"]}
    assert by_name["default"]["constraints"][0]["values"] == ["beta-1"]


@pytest.mark.slow
@pytest.mark.unleash
def test_unleash_invalid_token_is_an_actuator_error_with_its_status(
    unleash_stack: StackInfo, unleash_flag: str
) -> None:
    """A token Unleash refuses gives ActuatorError with the HTTP status and body."""
    with (
        UnleashActuator(unleash_stack.url, "*:*.not-a-real-token") as actuator,
        pytest.raises(ActuatorError) as caught,
    ):
        actuator.set_split(unleash_flag, {"v1": 90, "v2": 10})
    assert caught.value.status in (401, 403)
    assert f"HTTP {caught.value.status}" in str(caught.value)
    assert caught.value.flag_key == unleash_flag


@pytest.mark.unleash
def test_unleash_missing_flag_is_an_actuator_error_404(actuator: UnleashActuator) -> None:
    """A flag Unleash does not have gives ActuatorError with status 404 and Unleash's message."""
    missing = f"mf-missing-{uuid.uuid4().hex[:10]}"
    with pytest.raises(ActuatorError, match=missing) as caught:
        actuator.rollback(missing, to_version="v1", from_version="v2")
    assert caught.value.status == 404


@pytest.mark.slow
@pytest.mark.unleash
def test_unleash_reads_back_the_split_it_wrote(
    actuator: UnleashActuator, unleash_flag: str
) -> None:
    """current_split gives the variants' shares; a new flag with no strategy has none."""
    assert actuator.current_split(unleash_flag) is None
    actuator.set_split(unleash_flag, {"v1": 90, "v2": 10})
    assert actuator.current_split(unleash_flag) == {"v1": 90, "v2": 10}
    actuator.rollback(unleash_flag, to_version="v1", from_version="v2")
    assert actuator.current_split(unleash_flag) == {"v1": 100}
