"""Quality: toxicity, hallucination and prompt-injection trends per release, and canary analysis: two releases of
one app over the same period, each rate with its 95% interval and the difference with Newcombe's."""

import pandas as pd
import streamlit as st

from llmwatch.dashboards import console as c
from llmwatch.dashboards import queries as q
from llmwatch.dashboards.charts import over_time
from llmwatch.dashboards.markup import md
from llmwatch.dashboards.scope import Scope
from llmwatch.dashboards.stats import detector_accuracy, rate_difference, wilson

db = c.settings().database
scope = c.scope_picker()
st.title("Quality")

series = c.query(q.label_series(scope, db, by="release"))
if series.empty:
    st.info("No scored events in this time range.")
    st.stop()
charts = [("toxic", "Toxic outputs"), ("unsupported", "Unsupported answers"),
          ("injection", "Injection attempts (inputs and retrieved context)")]
for column, (name, title) in zip([*st.columns(2), *st.columns(2)], charts):
    frame = series[series[f"{name}_of"] > 0].assign(rate=lambda f, n=name: f[n] / f[f"{n}_of"])
    column.subheader(title)
    over_time(frame, "t", "rate", "release", percent=True, container=column)

st.header("Detectors against reviewers")
st.caption("On the uniform review sample (route:sample in the review queue): of what a signal flags, the share "
           "reviewers call an error (precision), and of the errors reviewers find, the share it flags (recall); "
           "95% Wilson intervals. Routed and escalated items are left out: they were picked for being doubtful.")
accuracy = detector_accuracy(c.query(q.reviewed_items(db, rule="route:sample", since=scope.start)))
if accuracy.empty:
    st.info("No reviewed items from the uniform sample in this time range yet (routing.sample in the evaluations file).")
else:
    def _interval(value: object, low: float, high: float, n: int) -> str:
        return "n/a (n = 0)" if value is None or value != value else f"{value:.2f} [{low:.2f}, {high:.2f}] of {n}"

    st.dataframe(pd.DataFrame({
        "app": accuracy["app"], "signal": accuracy["signal"], "reviewed": accuracy["reviewed"],
        "precision": [_interval(r.precision, r.precision_low, r.precision_high, r.flagged) for r in accuracy.itertuples()],
        "recall": [_interval(r.recall, r.recall_low, r.recall_high, r.errors) for r in accuracy.itertuples()],
    }), hide_index=True, width="stretch")

st.header("Compare two releases")
st.caption("Same app, same period (the time range on the left). Is the candidate worse than the baseline?")
per_release = c.query(q.label_totals(scope, db, by=("app", "release")))
# Apps with the most releases first: those are the ones with something to compare.
apps = per_release.groupby("app")["release"].nunique().sort_values(ascending=False, kind="stable").index.tolist()
app = st.selectbox("App", apps, key="compare_app")
# Newest release first: the candidate; the one before it: the baseline.
releases = c.query(q.releases_by_first_seen(scope, db, app))["release"].tolist()
if len(releases) < 2:
    st.info(f"{md(app)} has one release in this time range; nothing to compare.")
    st.stop()
left, right = st.columns(2)
baseline = left.selectbox("Baseline", releases, index=1, key="baseline")
candidate = right.selectbox("Candidate", releases, index=0, key="candidate")
if baseline == candidate:
    st.info("Pick two different releases.")
    st.stop()
pair = [baseline, candidate]
labels = c.query(q.release_counts(scope, db, app, pair)).set_index("release").reindex(pair).fillna(0)
traffic = c.query(q.traffic_by_release(
    Scope(scope.start, scope.end, scope.range_name, {"app": (app,), "release": tuple(pair)}), db,
)).set_index("release").reindex(pair).fillna(0)
# (bad, judged) per release for each rate the canary is judged on.
rates = {name: {r: (int(labels.at[r, name]), int(labels.at[r, f"{name}_of"])) for r in pair} for name in q.LABELS}
rates["error"] = {r: (int(traffic.at[r, "errors"]), int(traffic.at[r, "events"])) for r in pair}

rows = []
for name, by_release in rates.items():
    (k0, n0), (k1, n1) = by_release[baseline], by_release[candidate]
    if not (n0 and n1):
        continue
    d, low, high = rate_difference(k1, n1, k0, n0)
    verdict = "worse" if low > 0 else "better" if high < 0 else "no clear difference"
    b_lo, b_hi = wilson(k0, n0)
    c_lo, c_hi = wilson(k1, n1)
    rows.append({
        "label": name, "baseline": f"{100 * k0 / n0:.2f}% [{100 * b_lo:.2f}, {100 * b_hi:.2f}] of {n0:,}",
        "candidate": f"{100 * k1 / n1:.2f}% [{100 * c_lo:.2f}, {100 * c_hi:.2f}] of {n1:,}",
        "difference (points)": f"{100 * d:+.2f} [{100 * low:+.2f}, {100 * high:+.2f}]", "verdict": verdict,
        "_d": d, "_low": low, "_high": high,
    })
if not rows:
    st.info("The two releases have no events in common in this range.")
    st.stop()
table = pd.DataFrame(rows)
worse = table[table["verdict"] == "worse"]["label"].tolist()
if worse:
    st.warning(f"{md(candidate)} is worse than {md(baseline)} on: {', '.join(worse)} (95% interval of the difference above 0).")
else:
    st.success(f"No evidence that {md(candidate)} is worse than {md(baseline)}.")
st.dataframe(table.drop(columns=["_d", "_low", "_high"]), hide_index=True, width="stretch")
latency = traffic[["p50", "p95", "p99"]].round(0)
st.caption("Latency (ms) of each release over the same period: " + "; ".join(
    f"{r}: p50 {latency.at[r, 'p50']:.0f}, p95 {latency.at[r, 'p95']:.0f}, p99 {latency.at[r, 'p99']:.0f}"
    for r in pair if traffic.at[r, "events"]))
chart = table.assign(difference=100 * table["_d"], low=100 * table["_low"], high=100 * table["_high"])
st.vega_lite_chart(chart, {
    "layer": [
        {"mark": "rule", "encoding": {"y": {"field": "label", "type": "nominal"},
                                      "x": {"field": "low", "type": "quantitative", "title": "candidate − baseline (points)"},
                                      "x2": {"field": "high"}}},
        {"mark": {"type": "point", "filled": True, "size": 80},
         "encoding": {"y": {"field": "label", "type": "nominal"}, "x": {"field": "difference", "type": "quantitative"},
                      "color": {"field": "verdict", "type": "nominal"}}},
        {"mark": {"type": "rule", "strokeDash": [4, 4]}, "encoding": {"x": {"datum": 0}}},
    ],
}, width="stretch")
