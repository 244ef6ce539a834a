"""Every console page through Streamlit's AppTest against a seeded embedded store: signed in
through the login form, no exception, the key numbers on the page, and the actions recorded."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from llmwatch.alerts.releases import Registry
from llmwatch.alerts.silences import load_mutes
from llmwatch.core.settings import Settings
from llmwatch.dashboards import reviews
from llmwatch.dashboards.queries import reviews as reviews_query
from tests.dashboards.conftest import PASSWORDS
from tests.dashboards.seed import CANARY, SESSION, STABLE

APP = str(Path(__file__).resolve().parents[2] / "dashboards" / "app.py")


@pytest.fixture
def open_console(console_env, monkeypatch: pytest.MonkeyPatch):  # noqa: ANN001, ANN201
    """open_console(user, **env) -> a signed-in AppTest."""
    env, _, _ = console_env

    def start(user: str = "ada", url: dict[str, str] | None = None, **extra_env: str) -> AppTest:
        for name, value in {**env, **extra_env}.items():
            monkeypatch.setenv(name, value)
        st.cache_resource.clear()  # settings and clients are per process; each test has its own
        st.cache_data.clear()
        at = AppTest.from_file(APP, default_timeout=60)
        for name, value in (url or {}).items():  # a shared link, opened in a new session
            at.query_params[name] = value
        at.run()
        at.text_input[0].input(user)
        at.text_input[1].input(PASSWORDS[user])
        at.button[0].click()
        at.run()
        assert not at.exception, [e.message for e in at.exception]
        assert "user" in at.session_state
        return at

    return start


def visit(at: AppTest, page: str) -> AppTest:
    at.switch_page(f"views/{page}.py")
    at.run()
    assert not at.exception, [e.message for e in at.exception]
    return at


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


def texts(elements) -> str:  # noqa: ANN001
    """What a reader sees: Markdown's backslash escapes (event text is escaped) removed."""
    return re.sub(r"\\(.)", r"\1", "\n".join(str(e.value) for e in elements))


def test_a_wrong_password_is_refused(console_env, monkeypatch: pytest.MonkeyPatch) -> None:  # noqa: ANN001
    for name, value in console_env[0].items():
        monkeypatch.setenv(name, value)
    st.cache_resource.clear()
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.text_input[0].input("ada")
    at.text_input[1].input("not-the-password")
    at.button[0].click()
    at.run()
    assert "Wrong user or password." in texts(at.error)
    assert "user" not in at.session_state and not at.metric


def test_overview_shows_traffic_flags_and_the_open_incident(open_console, console_env) -> None:  # noqa: ANN001
    seeded = console_env[2]
    at = visit(open_console(), "overview")
    shown = metrics(at)
    assert shown["Events"] == f"{seeded.events:,}"
    assert shown["Error rate"] == f"{100 * seeded.errors / seeded.events:.2f}%"
    assert shown["Toxic"] == f"{100 * seeded.toxic_canary / seeded.events:.2f}%"
    assert shown["Anomalous"] == f"{100 / seeded.events:.2f}%"
    # One injection among the judged inputs (every event) and retrieved-context sets (docs-rag's third).
    assert shown["Injection"] == f"{100 / (seeded.events + seeded.events // 3):.2f}%"
    # p95 from the rollup's latency histogram: within its 2.5 % bucket error of the exact value.
    exact = float(np.percentile(seeded.latencies, 95))
    assert float(shown["Latency p95"].removesuffix(" ms")) == pytest.approx(exact, rel=0.03)
    assert shown["Tokens"] == f"{60 * seeded.events / 1000:.3g}k"
    assert "1 firing" in texts(at.warning) and "toxic-outputs" in texts(at.warning)
    table = at.dataframe[0].value
    assert set(table["release"]) == {STABLE.release, CANARY.release, "rag:4@llama-3-8b"}
    assert table["events"].sum() == seeded.events


def test_overview_filters_live_in_the_url(open_console) -> None:  # noqa: ANN001
    at = visit(open_console(url={"range": "6h", "app": "docs-rag"}), "overview")
    assert metrics(at)["Events"] == "200"
    assert at.query_params["app"] in ("docs-rag", ["docs-rag"]) and at.query_params["range"] in ("6h", ["6h"])


def test_traces_search_and_a_trace_with_claims_redactions_and_feedback(open_console, console_env) -> None:  # noqa: ANN001
    seeded = console_env[2]
    at = visit(open_console(), "traces")
    assert len(at.dataframe[0].value) == 100
    at.text_input(key="text").input("90 days")
    at.run()
    found = at.dataframe[0].value
    assert list(found["event_id"]) == [seeded.unsupported_event_id]
    assert found["grounding"].iloc[0] == pytest.approx(0.84)
    at.query_params["event"] = seeded.unsupported_event_id
    at.run()
    page = texts(at.markdown)
    assert f"<mark title='not supported by the context'>{seeded.unsupported_claim}</mark>" in page
    assert "that 90 days is wrong" in page

    at.text_input(key="text").input("")
    at.query_params["event"] = seeded.injected_event_id
    at.run()
    assert "prompt injection)'>" + seeded.injection + "</mark>" in texts(at.markdown)
    assert any("possible injection" in e.label for e in at.expander)

    at.query_params["event"] = seeded.pii_event_id
    at.run()
    assert "Redacted before storage" in texts(at.warning)
    assert "<code>[EMAIL]</code>" in texts(at.markdown)


def test_a_trace_opens_as_a_tree_with_its_failing_and_slowest_steps(open_console, console_env) -> None:  # noqa: ANN001
    seeded = console_env[2]
    at = visit(open_console(url={"event": seeded.unsupported_event_id}), "traces")
    page = texts(at.markdown)
    assert "**Trace** · 4 steps · 1 failed · slowest: answer question (1,500 ms)" in page
    for step in ("answer question", "search kb", "lookup order", "order service timed out",
                 "anomaly 0.40, unsupported grounding 0.84, injection (context) 0.02, injection (input) 0.01, "
                 "toxicity 0.02"):  # the LLM call's scores
        assert step in page, step
    # The tree's order: the agent, then its children in start order, the LLM call last.
    assert page.index("search kb") < page.index("lookup order") < page.index("llama-3-8b")
    assert [re.sub(r"\\(.)", r"\1", link.label) for link in at.get("page_link")] == [f"Session {SESSION}"]


def test_sessions_are_flagged_and_read_in_order(open_console) -> None:  # noqa: ANN001
    at = visit(open_console(), "sessions")
    sessions = at.dataframe[0].value
    (row,) = sessions[sessions["session_id"] == SESSION].to_dict("records")
    assert (row["app"], row["turns"], row["unsupported"], row["negative_feedback"], row["toxic"]) == (
        "docs-rag", 5, 1, 1, 0)
    at.toggle(key="flagged_only").set_value(True).run()
    assert list(at.dataframe[0].value["session_id"]) == [SESSION]
    at.query_params["session"], at.query_params["session_app"] = SESSION, "docs-rag"
    at.run()
    assert not at.exception
    said = [str(e.value) for e in at.text]
    assert said[0] == "question 294 about refunds" and len(said) == 10  # five turns, question and answer each
    assert "unsupported" in texts(at.caption)
    assert len(at.get("page_link")) == 5  # each turn opens its trace


def test_a_mangled_link_opens_with_warnings_not_errors(open_console) -> None:  # noqa: ANN001
    at = open_console(url={"range": "3 weeks"})
    assert "unknown time range '3 weeks'; showing 24h" in texts(at.sidebar.warning)
    assert metrics(at)["Events"] == "600"
    at = visit(open_console(url={"event": "not-a-uuid"}), "traces")
    assert "'not-a-uuid' in the link is not an event id." in texts(at.warning)


def test_traces_score_range_filter(open_console) -> None:  # noqa: ANN001
    at = visit(open_console(), "traces")
    at.slider(key="score_toxicity").set_value((0.9, 1.0))
    at.run()
    found = at.dataframe[0].value
    assert len(found) == 25 and (found["toxicity"] >= 0.9).all()


def test_a_search_becomes_a_dataset(open_console, console_env) -> None:  # noqa: ANN001
    _, store, _ = console_env
    at = visit(open_console("vic"), "traces")  # a viewer cannot build datasets
    assert "dataset_add" not in [b.key for b in at.button]
    at = visit(open_console("rui"), "traces")
    at.slider(key="score_toxicity").set_value((0.9, 1.0))
    at.run()
    at.text_input(key="dataset_name").input("rude-answers")
    at.run()
    at.button(key="dataset_add").click()
    at.run()
    assert not at.exception and "rude-answers v1 holds 25 case(s)" in texts(at.success)
    rows = store.query(f"SELECT count(), any(source), any(labels['app']) FROM {store.database}.datasets WHERE name = 'rude-answers'")
    assert rows == [(25, "search", "support-bot")]


def test_quality_says_the_canary_is_worse(open_console) -> None:  # noqa: ANN001
    at = visit(open_console(), "quality")
    assert at.selectbox(key="compare_app").value == "support-bot"
    # The newest release is the candidate, the one before it the baseline.
    assert (at.selectbox(key="baseline").value, at.selectbox(key="candidate").value) == (STABLE.release, CANARY.release)
    assert f"{CANARY.release} is worse than {STABLE.release} on: toxic" in texts(at.warning)
    table = at.dataframe[1].value.set_index("label")
    assert table.at["toxic", "verdict"] == "worse"
    assert table.at["toxic", "baseline"].startswith("0.00%")
    assert table.at["error", "verdict"] == "no clear difference"  # errors are spread evenly in the seed
    assert "Latency (ms) of each release" in texts(at.caption)


def test_quality_measures_each_detector_on_the_uniform_review_sample(open_console, console_env) -> None:  # noqa: ANN001
    _, _, seeded = console_env
    at = visit(open_console(), "quality")
    accuracy = at.dataframe[0].value.set_index(["app", "signal"])
    flagged = sum(d == "toxic" for d in seeded.sampled.values())  # reviewers' errors: one miss among them
    row = accuracy.loc[("support-bot", "toxicity")]
    assert row["reviewed"] == len(seeded.sampled)
    # One false alarm among the flagged, one miss among the errors: both shown with interval and size.
    assert row["precision"].startswith(f"{(flagged - 1) / flagged:.2f} [") and row["precision"].endswith(f"of {flagged}")
    assert row["recall"].startswith(f"{(flagged - 1) / flagged:.2f} [") and row["recall"].endswith(f"of {flagged}")


def test_experiments_side_by_side_case_by_case(open_console, console_env) -> None:  # noqa: ANN001
    _, _, seeded = console_env
    at = visit(open_console(), "experiments")
    overview = at.dataframe[0].value
    assert set(overview["experiment"]) == set(seeded.experiments)
    signals = at.dataframe[1].value.set_index("signal")
    assert signals.at["grounding", "A"].startswith("0.0%") and signals.at["grounding", "B"].startswith("33.3%")
    cases = at.dataframe[2].value
    assert len(cases) == 3
    at.toggle(key="experiment_changed").set_value(True)
    at.run()
    changed = at.dataframe[2].value
    assert list(changed["output B"]) == ["Forever, in Frankfurt."]


def test_promoting_through_the_console_passes_the_release_gate_or_overrides_it_on_record(
    open_console, console_env, broker: str, tmp_path: Path,  # noqa: ANN001
) -> None:
    _, store, _ = console_env
    gate = tmp_path / "evaluations.yaml"
    gate.write_text("gates:\n  - {app: docs-rag, dataset: docs-gate, signals: [grounding, error]}\n")
    at = visit(open_console("ada", url={"app": "docs-rag"}, LLMWATCH_KAFKA_BOOTSTRAP=broker,
                            LLMWATCH_EVALUATIONS=str(gate)), "releases")
    at.selectbox(key="release_target").set_value("rag:5@llama-3-8b")
    at.run()
    # rag:5's experiment invented one answer in three: worse by more than max_increase (10 points).
    assert "stopped" in texts(at.error) and "grounding: 1/3" in texts(at.error)
    assert "release_go" not in [b.key for b in at.button]  # no promote button until the override is chosen
    at.checkbox(key="release_force").check()
    at.run()
    at.text_input(key="release_reason").input("hotfix, accepted by the docs team")
    at.checkbox(key="release_confirm").check()
    at.run()
    at.button(key="release_go").click()
    at.run()
    assert not at.exception
    rows = store.query(f"SELECT actor, action, release, details FROM {store.database}.audit_log WHERE action = 'gate_overridden'")
    assert rows and rows[0][:3] == ("ada", "gate_overridden", "rag:5@llama-3-8b") and "hotfix" in rows[0][3]
    assert metrics(at)["Serving now"] == "rag:5@llama-3-8b"


def test_drift_page_shows_the_verdicts_terms_and_the_inputs_that_moved(open_console) -> None:  # noqa: ANN001
    at = visit(open_console(), "drift")
    assert metrics(at) == {"docs-rag · input": "no drift", "support-bot · input": "drift"}
    assert at.selectbox(key="check").value == 0  # drifted first: support-bot
    assert "invoice" in texts(at.markdown)
    moved = at.dataframe[0].value
    assert len(moved) == 10 and moved["distance to nearest reference"].is_monotonic_decreasing


def test_alerts_acknowledge_and_silence_are_recorded(open_console, console_env) -> None:  # noqa: ANN001
    _, store, seeded = console_env
    at = visit(open_console("vic"), "alerts")
    assert metrics(at)["Firing"] == "1"
    assert at.button(key="FormSubmitter:acknowledge-Acknowledge").disabled  # viewers look, no more

    at = visit(open_console("rui"), "alerts")
    at.text_input(key="ack_note").input("looking at v8")
    at.button(key="FormSubmitter:acknowledge-Acknowledge").click()
    at.run()
    assert at.button(key="FormSubmitter:silence-Silence").disabled  # reviewers cannot silence

    at = visit(open_console("ada"), "alerts")
    at.text_input(key="silence_reason").input("rolling back by hand")
    at.button(key="FormSubmitter:silence-Silence").click()
    at.run()
    assert not at.exception
    mutes = load_mutes(store, "toxic-outputs", seeded.now)
    group = '{"app":"support-bot","release":"answer:8@gpt-4o-mini"}'
    assert group in mutes.silenced and group in mutes.acknowledged
    recorded = store.query(f"SELECT actor, action FROM {store.database}.audit_log WHERE action IN "
                           f"('acknowledge', 'silence') ORDER BY at")
    assert recorded == [("rui", "acknowledge"), ("ada", "silence")]
    assert "Notifications of this incident are silenced." in texts(at.warning)


def test_two_reviewers_decide_an_item_and_the_agreement_shows(open_console, console_env) -> None:  # noqa: ANN001
    _, store, seeded = console_env
    at = visit(open_console("vic"), "review")
    assert "Deciding needs the reviewer role" in texts(at.info)

    first = None
    for reviewer, decision in (("rui", "toxic"), ("rita", "toxic")):
        at = visit(open_console(reviewer), "review")
        caption = texts(at.caption)
        assert "5 event(s) still need decisions" in caption
        event = next(e for e in seeded.review_event_ids if e in caption)
        first = first or event
        assert event == first  # both reviewers see the oldest item first
        at.button(key=f"decide_{decision}").click()
        at.run()
    at = visit(at, "review")
    assert "4 event(s) still need decisions" in texts(at.caption)
    assert metrics(at)["Decisions"] == str(2 + 2 * len(seeded.sampled))  # the seed's review sample has two each
    assert metrics(at)["Fleiss' kappa"] == "1.00"

    at.button(key="decide_other").click()  # `other` without a note is refused
    at.run()
    assert "needs a note" in texts(at.error)

    records = [r for r in reviews.dataset(store.query_df(*reviews_query(store.database))) if r["event_id"] not in seeded.sampled]
    assert [(r["event_id"], r["label"], r["agreed"], len(r["decisions"])) for r in records] == [(first, "toxic", True, 2)]
    assert records[0]["output"]  # the text travels with the label
    assert reviews.to_jsonl(records).count(b"\n") == 1
    import io

    import pyarrow.parquet as pq

    assert pq.read_table(io.BytesIO(reviews.to_parquet(records))).num_rows == 1


def test_releases_rollback_needs_confirmation_and_lands_in_the_audit_log(open_console, console_env, broker: str) -> None:  # noqa: ANN001
    _, store, _ = console_env
    at = visit(open_console("vic", LLMWATCH_KAFKA_BOOTSTRAP=broker), "releases")
    assert "need the admin role" in texts(at.caption)

    at = visit(open_console("ada", url={"app": "support-bot"}, LLMWATCH_KAFKA_BOOTSTRAP=broker), "releases")
    assert metrics(at)["Serving now"] == CANARY.release
    at.radio(key="release_action").set_value("rollback")
    at.run()
    at.text_input(key="release_reason").input("v8 is rude")
    at.run()
    assert at.button(key="release_go").disabled  # not confirmed yet
    at.checkbox(key="release_confirm").check()
    at.run()
    at.button(key="release_go").click()
    at.run()
    assert not at.exception
    settings = Settings.from_env({}, clickhouse_url=store.url, database=store.database)
    assert Registry(store, settings).active("support-bot").release == STABLE.release
    assert metrics(at)["Serving now"] == STABLE.release
    assert ("ada", "rolled_back", CANARY.release) in store.query(
        f"SELECT actor, action, release FROM {store.database}.audit_log WHERE app = 'support-bot'")


def test_sql_is_read_only_by_clickhouse_and_capped(open_console, console_env) -> None:  # noqa: ANN001
    _, store, seeded = console_env
    at = visit(open_console("vic", LLMWATCH_CONSOLE_SQL_MAX_ROWS="50"), "sql")
    at.text_area(key="sql").input(f"SELECT app, count() AS n FROM {store.database}.traces WHERE environment = 'production' GROUP BY app ORDER BY app")
    at.button(key="run_sql").click()
    at.run()
    result = at.dataframe[0].value
    assert dict(zip(result["app"], result["n"])) == {"docs-rag": 200, "support-bot": 400}

    for statement in (f"INSERT INTO {store.database}.reviews (reviewer) VALUES ('mallory')",
                      f"DROP TABLE {store.database}.traces",
                      "SELECT 1 SETTINGS readonly = 0",
                      "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
                      "SELECT 'x' INTO OUTFILE '/tmp/llmwatch-console-probe' TRUNCATE",
                      "KILL QUERY WHERE 1"):
        at.text_area(key="sql").input(statement)
        at.button(key="run_sql").click()
        at.run()
        refusal = texts(at.error)
        assert "READONLY" in refusal or "readonly" in refusal or "ACCESS_DENIED" in refusal, statement
    assert store.query(f"SELECT count() FROM {store.database}.traces WHERE environment = 'production'") == [(seeded.events,)]
    assert store.query(f"SELECT count() FROM {store.database}.reviews WHERE reviewer = 'mallory'") == [(0,)]

    at.text_area(key="sql").input("SELECT number FROM numbers(100000)")
    at.button(key="run_sql").click()
    at.run()
    assert len(at.dataframe[0].value) == 50
    assert "capped" in texts(at.caption)
