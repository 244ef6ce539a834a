"""Drift: the MMD statistic and p-value over time per app; for one check, a 2-D projection of a
sample of its reference and current embeddings, the terms that moved, and the current inputs
least like anything in the reference."""

import altair as alt
import numpy as np
import pandas as pd
import streamlit as st

from llmwatch.dashboards import console as c
from llmwatch.dashboards import queries as q
from llmwatch.dashboards.charts import over_time
from llmwatch.dashboards.markup import md
from llmwatch.dashboards.stats import moved_most, project_2d
from llmwatch.detectors.drift_job import Window, sample_window

PROJECTION_SAMPLE = 400  # points per side in the picture

db = c.settings().database
scope = c.scope_picker(dimensions=("app",))
st.title("Drift")

checks = c.query(q.drift_checks(scope, db))
if checks.empty:
    st.info("No drift checks in this time range. `llmwatch jobs` runs them every --drift-interval-s "
            "once apps have embeddings.")
    st.stop()
whole_app = checks[~checks["current"].str.contains(" release ")]
mmd = whole_app[whole_app["method"] == "mmd"]
latest = mmd.sort_values("checked_at").groupby(["app", "target"]).tail(1)
latest = latest.assign(calm=latest["verdict"] != "drift").sort_values(["calm", "app", "target"])  # drifted first
row = st.columns(max(1, len(latest)))
for column, check in zip(row, latest.itertuples()):
    column.metric(f"{check.app} · {check.target}", check.verdict.replace("_", " "),
                  f"p = {check.p_value:.3g}" if pd.notna(check.p_value) else "too few samples", delta_color="off",
                  delta_arrow="off")

left, right = st.columns(2)
left.subheader("MMD p-value (low = drift)")
series = mmd.assign(series=mmd["app"] + " · " + mmd["target"])
over_time(series, "checked_at", "p_value", "series", y_title="p-value", container=left)
right.subheader("MMD statistic")
over_time(series, "checked_at", "statistic", "series", y_title="MMD²", container=right)

st.header("One check")
options = latest
labels = [f"{r.app} · {r.target} · {r.checked_at:%Y-%m-%d %H:%M}" for r in options.itertuples()]
chosen = options.iloc[st.selectbox("Latest check of", range(len(labels)), format_func=labels.__getitem__, key="check")]
cols = st.columns(3)
cols[0].markdown("**Terms up**: " + (md(", ".join(chosen["terms_up"])) or "–"))
cols[1].markdown("**Terms down**: " + (md(", ".join(chosen["terms_down"])) or "–"))
cols[2].caption(f"reference {chosen['reference']} ({chosen['reference_size']}) vs current {chosen['current']} "
                f"({chosen['current_size']})")


@st.cache_data(ttl=60, show_spinner="Sampling embeddings…")
def sample(app: str, target: str, label: str) -> tuple[np.ndarray, list[str]]:
    window, release = Window.from_label(label)
    return sample_window(c.store(), app, target, window, PROJECTION_SAMPLE, release)


reference, _ = sample(chosen["app"], chosen["target"], chosen["reference"])
current, texts = sample(chosen["app"], chosen["target"], chosen["current"])
if len(reference) == 0 or len(current) == 0:
    st.info("The embeddings of this check are no longer stored (retention), or one side is empty.")
    st.stop()
ref_xy, cur_xy = project_2d(reference, current)
points = pd.concat([
    pd.DataFrame(ref_xy, columns=["x", "y"]).assign(side="reference", text=""),
    pd.DataFrame(cur_xy, columns=["x", "y"]).assign(side="current", text=[t[:120] for t in texts]),
])
st.subheader("Reference and current embeddings (PCA, sampled)")
st.altair_chart(alt.Chart(points).mark_circle(size=40, opacity=0.6).encode(
    x=alt.X("x:Q", title=None), y=alt.Y("y:Q", title=None),
    color=alt.Color("side:N", title=None, scale=alt.Scale(domain=["reference", "current"], range=["#9aa5b1", "#e4572e"]),
                    legend=alt.Legend(orient="bottom")),
    tooltip=["side:N", "text:N"],
).properties(height=380), width="stretch")

st.subheader("Current inputs least like the reference")
far, seen = [], set()
for i, distance in moved_most(reference, current, 200):
    if distance < 0.05:  # a near twin is in the reference: nothing new about it
        break
    if texts[i] not in seen:
        seen.add(texts[i])
        far.append({"distance to nearest reference": round(distance, 3), chosen["target"]: texts[i]})
    if len(far) == 10:
        break
if far:
    st.dataframe(pd.DataFrame(far), hide_index=True, width="stretch")
else:
    st.caption("Every sampled current text has a near twin (cosine distance < 0.05) in the reference.")
