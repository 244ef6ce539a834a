"""Overview: traffic, errors, latency, tokens and cost over time; the share of toxic, unsupported,
anomalous and injection-carrying events; open incidents; a row per app and release."""

import streamlit as st

from llmwatch.dashboards import console as c
from llmwatch.dashboards import queries as q
from llmwatch.dashboards.charts import over_time

db = c.settings().database
scope = c.scope_picker()
st.title("Overview")

totals = c.query(q.traffic_totals(scope, db)).iloc[0]
labels = c.query(q.label_totals(scope, db)).iloc[0]
open_incidents = c.query(q.incidents(db, open_only=True))
events = int(totals["events"] or 0)

row = st.columns(5 + len(q.LABELS))
row[0].metric("Events", f"{events:,}")
row[1].metric("Error rate", c.percent(totals["errors"] or 0, events))
row[2].metric("Latency p95", c.duration_ms(totals["p95"]) if events else "–")
row[3].metric("Tokens", c.compact(totals["tokens"] or 0))
row[4].metric("Cost", c.dollars(totals['cost_usd'] or 0))
for column, name in zip(row[5:], q.LABELS):
    column.metric(name.capitalize(), c.percent(labels[name] or 0, labels[f"{name}_of"] or 0),
                  help=f"share of scored events labelled {name}")

if not open_incidents.empty:
    firing = open_incidents[open_incidents["status"] == "firing"]
    # Warnings, not errors: an error block means the console itself failed (the browser test checks).
    st.warning(f"{len(firing)} firing, {len(open_incidents) - len(firing)} pending incident(s): "
             + "; ".join(f"{r.rule} ({', '.join(f'{k}={v}' for k, v in sorted(dict(r.labels).items()))})"
                         for r in open_incidents.head(5).itertuples()))
    st.page_link("views/alerts.py", label="Open the alerts", icon=":material/notifications_active:")

if not events:
    st.info("No events in this time range. Widen it, or send events (README, Quick start).")
    st.stop()

series = c.query(q.traffic_series(scope, db, by="app"))
series["error_rate"] = series["errors"] / series["events"]
left, right = st.columns(2)
step = q.traffic_step(scope)
left.subheader(f"Events per {step // 3600} h" if step >= 3600 else f"Events per {step // 60} min")
over_time(series, "t", "events", "app", kind="area", container=left)
right.subheader("Latency (ms)")
overall = c.query(q.traffic_series(scope, db, by="'all'"))
latency = overall.melt(id_vars="t", value_vars=["p50", "p95", "p99"], var_name="percentile", value_name="ms")
over_time(latency, "t", "ms", "percentile", container=right)

left, right = st.columns(2)
left.subheader("Error rate")
over_time(series, "t", "error_rate", "app", percent=True, y_title="errors", container=left)
right.subheader("Cost")
over_time(series, "t", "cost_usd", "app", kind="area", y_title="USD", container=right)

shares = c.query(q.label_series(scope, db))
if not shares.empty:
    for name in q.LABELS:
        shares[name] = shares[name] / shares[f"{name}_of"].where(shares[f"{name}_of"] > 0)
    st.subheader("Share of flagged events")
    over_time(shares.melt(id_vars="t", value_vars=list(q.LABELS), var_name="label", value_name="share"),
              "t", "share", "label", percent=True)

st.subheader("Per app and release")
by_release = c.query(q.traffic_by_release(scope, db))
flagged = c.query(q.label_totals(scope, db, by=("app", "release")))
table = by_release.merge(flagged, on=["app", "release"], how="left")
for name in q.LABELS:
    table[f"{name} %"] = 100 * table[name] / table[f"{name}_of"].where(table[f"{name}_of"] > 0)
table["error %"] = 100 * table["errors"] / table["events"]
st.dataframe(
    table[["app", "release", "events", "error %", "p50", "p95", "p99", "tokens", "cost_usd",
           *(f"{n} %" for n in q.LABELS)]],
    hide_index=True, width="stretch",
    column_config={c_: st.column_config.NumberColumn(format="%.2f") for c_ in
                   ["error %", "p50", "p95", "p99", "cost_usd", *(f"{n} %" for n in q.LABELS)]},
)
