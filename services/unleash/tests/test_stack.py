"""The real Unleash 8 stack read through the real OpenFeature Unleash provider.

Run from the repository root: python -m pytest services/unleash
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.flag_evaluation import Reason
from unleash_stack import StackInfo, UnleashAdmin, UnleashAdminError, start_stack

from support import holds_for, wait_until
from support.unleash import CHANGE_BOUND, REFRESH_INTERVAL, create_rollout

if TYPE_CHECKING:  # imported by the fixtures when the tests run; collection stays light
    from openfeature.contrib.provider.unleash import UnleashProvider

pytestmark = [pytest.mark.unleash, pytest.mark.slow]

USER = EvaluationContext(targeting_key="user-1")


def _start_provider(provider: UnleashProvider, flag: str, expected: str | None) -> float:
    """Set the provider and wait until it serves ``expected`` (None: any variant) for USER.

    A flag created a moment ago can be missing from the first fetch: the server answers
    from its client-features cache until its next revision tick (up to 1 s later).
    """
    api.set_provider_and_wait(provider)
    client = api.get_client()

    def serving() -> bool:
        value = client.get_string_value(flag, "default", USER)
        return value == expected if expected is not None else value != "default"

    return wait_until(serving, CHANGE_BOUND, f"new flag {flag} serving {expected or 'a variant'}")


def test_stack_is_healthy_and_reused(unleash_stack: StackInfo) -> None:
    health = httpx.get(f"{unleash_stack.url}/health", timeout=5)
    assert health.status_code == 200
    assert health.json().get("health") == "GOOD"

    admin = httpx.get(
        f"{unleash_stack.url}/api/admin/projects",
        headers={"Authorization": unleash_stack.admin_token},
        timeout=5,
    )
    assert admin.status_code == 200, admin.text
    client = httpx.get(
        f"{unleash_stack.url}/api/client/features",
        headers={"Authorization": unleash_stack.client_token},
        timeout=5,
    )
    assert client.status_code == 200, client.text

    again = start_stack(unleash_stack.dir)
    assert again.reused
    assert again == unleash_stack


def test_default_web_ui_login_works(unleash_stack: StackInfo) -> None:
    page = httpx.get(f"{unleash_stack.url}/", timeout=10)
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    with httpx.Client(base_url=unleash_stack.url, timeout=10) as browser:
        login = browser.post(
            "/auth/simple/login",
            json={"username": unleash_stack.ui_username, "password": unleash_stack.ui_password},
        )
        assert login.status_code == 200, login.text
        assert browser.get("/api/admin/user").status_code == 200


def test_string_flag_serves_payload_and_follows_weight_changes(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    unleash_provider: Callable[..., UnleashProvider],
) -> None:
    create_rollout(unleash_admin, flag_name, {"v1": 100, "v2": 0})
    _start_provider(unleash_provider(), flag_name, "v1")
    client = api.get_client()

    details = client.get_string_details(flag_name, "default", USER)
    assert details.value == "v1"
    assert details.variant == "v1"
    assert details.reason == Reason.TARGETING_MATCH
    assert details.error_code is None

    unleash_admin.set_variants_rollout(flag_name, {"v1": 0, "v2": 100})
    took = wait_until(
        lambda: client.get_string_value(flag_name, "default", USER) == "v2",
        CHANGE_BOUND,
        "weights 0/100",
    )
    print(f"weight change seen after {took:.2f} s")


def test_disabled_flag_serves_the_default(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    unleash_provider: Callable[..., UnleashProvider],
) -> None:
    create_rollout(unleash_admin, flag_name, {"v1": 100, "v2": 0})
    _start_provider(unleash_provider(), flag_name, "v1")
    client = api.get_client()

    unleash_admin.disable(flag_name)
    took = wait_until(
        lambda: client.get_string_value(flag_name, "default", USER) == "default",
        CHANGE_BOUND,
        "disabled flag",
    )
    print(f"disable seen after {took:.2f} s")
    details = client.get_string_details(flag_name, "default", USER)
    assert details.reason == Reason.DEFAULT
    assert details.variant is None
    assert details.error_code is None

    unleash_admin.enable(flag_name)
    wait_until(
        lambda: client.get_string_value(flag_name, "default", USER) == "v1",
        CHANGE_BOUND,
        "re-enabled flag",
    )


def test_split_90_10_over_2000_users_is_within_2_points(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    unleash_provider: Callable[..., UnleashProvider],
) -> None:
    create_rollout(unleash_admin, flag_name, {"v1": 90, "v2": 10})
    _start_provider(unleash_provider(), flag_name, None)
    client = api.get_client()

    keys = [f"user-{i}" for i in range(2000)]
    served = {
        key: client.get_string_value(flag_name, "default", EvaluationContext(targeting_key=key))
        for key in keys
    }
    counts = Counter(served.values())
    assert set(counts) == {"v1", "v2"}
    share_v1 = counts["v1"] / len(keys)
    assert abs(share_v1 - 0.90) <= 0.02, counts

    # Stickiness: the same targeting key gets the same version again.
    for key in keys[:200]:
        ctx = EvaluationContext(targeting_key=key)
        assert client.get_string_value(flag_name, "default", ctx) == served[key]


def test_string_value_is_the_payload_and_variant_is_the_name(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    unleash_provider: Callable[..., UnleashProvider],
) -> None:
    create_rollout(
        unleash_admin,
        flag_name,
        {"blue": 100, "green": 0},
        payloads={"blue": "model-2024-06-01", "green": "model-2024-07-01"},
    )
    _start_provider(unleash_provider(), flag_name, "model-2024-06-01")
    details = api.get_client().get_string_details(flag_name, "default", USER)
    assert details.value == "model-2024-06-01"
    assert details.variant == "blue"
    assert details.flag_metadata["variant_name"] == "blue"


def test_unleash_events_reach_provider_handlers_only(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    unleash_provider: Callable[..., UnleashProvider],
) -> None:
    create_rollout(unleash_admin, flag_name, {"v1": 100, "v2": 0})
    provider = unleash_provider()
    provider_events: list[tuple[ProviderEvent, Any]] = []
    api_events: list[tuple[ProviderEvent, EventDetails]] = []
    changed = threading.Event()

    def on_provider_changed(details: Any) -> None:
        provider_events.append((ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, details))
        if flag_name in details.get("flag_keys", []):
            changed.set()

    def api_handler(event: ProviderEvent) -> Callable[[EventDetails], None]:
        def record(details: EventDetails) -> None:
            api_events.append((event, details))

        return record

    provider.add_handler(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED, on_provider_changed)
    for event in (
        ProviderEvent.PROVIDER_READY,
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
        ProviderEvent.PROVIDER_ERROR,
        ProviderEvent.PROVIDER_STALE,
    ):
        api.add_handler(event, api_handler(event))

    api.set_provider_and_wait(provider)
    assert changed.wait(CHANGE_BOUND), "no CONFIGURATION_CHANGED for the initial fetch"
    changed.clear()
    unleash_admin.set_variants_rollout(flag_name, {"v1": 0, "v2": 100})
    assert changed.wait(CHANGE_BOUND), "no CONFIGURATION_CHANGED after a weight change"

    def unleash_api_events() -> list[ProviderEvent]:
        return [event for event, d in api_events if d.provider_name == "Unleash Provider"]

    # A forwarded event would reach the API handlers right after the provider's own; nothing
    # says it will not come, so watch one more refresh interval.
    holds_for(
        lambda: unleash_api_events() == [ProviderEvent.PROVIDER_READY],
        REFRESH_INTERVAL + 0.5,
        "only READY reaches the API handlers",
    )

    # Provider handlers get a plain dict, not an OpenFeature EventDetails.
    details = provider_events[-1][1]
    assert details["provider_name"] == "Unleash Provider"
    assert flag_name in details["flag_keys"]

    # The API handlers only see READY, which the SDK itself emits after initialize() returns.
    assert unleash_api_events() == [ProviderEvent.PROVIDER_READY]


def test_bad_token_is_not_an_error_but_serves_defaults(
    unleash_admin: UnleashAdmin,
    flag_name: str,
    unleash_provider: Callable[..., UnleashProvider],
) -> None:
    create_rollout(unleash_admin, flag_name, {"v1": 100, "v2": 0})
    api.set_provider_and_wait(unleash_provider(api_token="default:development.not-a-token"))
    details = api.get_client().get_string_details(flag_name, "default", USER)
    assert details.value == "default"
    assert details.reason == Reason.DEFAULT
    assert details.error_code is None


def test_admin_errors_carry_the_response_body(unleash_admin: UnleashAdmin, flag_name: str) -> None:
    unleash_admin.create_flag(flag_name)
    with pytest.raises(UnleashAdminError) as caught:
        unleash_admin.create_flag(flag_name)
    assert caught.value.status_code == 409
    assert "already exists" in caught.value.body
    with pytest.raises(ValueError, match="sum to 100"):
        unleash_admin.set_variants_rollout(flag_name, {"v1": 90, "v2": 20})


def test_variable_weights_would_be_rewritten_to_an_even_split(
    unleash_admin: UnleashAdmin, flag_name: str
) -> None:
    """Why set_variants_rollout sends ``fix`` weights: ``variable`` ones are evened out."""
    unleash_admin.create_flag(flag_name)
    path = f"/api/admin/projects/default/features/{flag_name}/environments/development/strategies"
    variants = [
        {"name": n, "weight": w, "weightType": "variable", "stickiness": "default"}
        for n, w in (("v1", 900), ("v2", 100))
    ]
    stored = unleash_admin._request(
        "POST", path, json={"name": "flexibleRollout", "parameters": {}, "variants": variants}
    )
    assert [v["weight"] for v in stored["variants"]] == [500, 500]

    all_fix = [{**v, "weightType": "fix"} for v in variants]
    with pytest.raises(UnleashAdminError, match='at least one \\\\"variable\\\\" variant'):
        unleash_admin._request(
            "POST", path, json={"name": "flexibleRollout", "parameters": {}, "variants": all_fix}
        )

    stored = unleash_admin.set_variants_rollout(flag_name, {"v1": 90, "v2": 10})
    assert {v["name"]: v["weight"] for v in stored["variants"]} == {"v1": 900, "v2": 100}
