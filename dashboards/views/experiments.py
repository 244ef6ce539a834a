"""Experiments: each replay of a dataset through a candidate release, its signals with 95%
intervals, and two experiments side by side, case by case (`llmwatch experiment run`)."""

import json

import pandas as pd
import streamlit as st

from llmwatch.dashboards import console as c
from llmwatch.dashboards import queries as q
from llmwatch.dashboards.markup import md

db = c.settings().database
st.title("Experiments")

listed = c.fresh(q.experiments(db))
if listed.empty:
    st.info("No experiments yet. Replay a dataset through a candidate with `llmwatch experiment run --dataset NAME "
            "--app APP --endpoint URL --model MODEL --release PROMPT_ID:VERSION` (docs/evaluations.md).")
    st.stop()
apps = sorted(listed["app"].unique())
app = st.selectbox("App", apps, key="experiment_app")
mine = listed[listed["app"] == app].reset_index(drop=True)
mine["label"] = mine["release"] + " · " + mine["dataset"] + " v" + mine["dataset_version"].astype(str) + " · " + mine["experiment_id"]


def signals(summary: str) -> dict:
    return json.loads(summary or "{}").get("signals", {})


def cell(entry: dict | None) -> str:
    if not entry or not entry.get("of"):
        return "–"
    return f"{100 * entry['rate']:.1f}% [{100 * entry['low']:.1f}, {100 * entry['high']:.1f}] of {entry['of']}"


overview = pd.DataFrame([{"experiment": r.experiment_id, "release": r.release, "dataset": f"{r.dataset} v{r.dataset_version}",
                          "status": r.status, "cases": r.cases, "finished": r.updated_at,
                          **{name: cell(entry) for name, entry in signals(r.summary).items()}} for r in mine.itertuples()])
st.dataframe(overview, hide_index=True, width="stretch")

st.header("Side by side")
if len(mine) < 2:
    st.info(f"{md(app)} has one experiment; run another release on the same dataset to compare.")
    st.stop()
left, right = st.columns(2)
a = left.selectbox("Experiment A", mine["label"], index=1, key="experiment_a")
b = right.selectbox("Experiment B", mine["label"], index=0, key="experiment_b")
chosen = [mine[mine["label"] == a].iloc[0], mine[mine["label"] == b].iloc[0]]
if (chosen[0]["dataset"], chosen[0]["dataset_version"]) != (chosen[1]["dataset"], chosen[1]["dataset_version"]):
    st.warning("The two experiments ran on different datasets or versions: the cases below do not line up.")
sa, sb = signals(chosen[0]["summary"]), signals(chosen[1]["summary"])
st.dataframe(pd.DataFrame([{"signal": name, "A": cell(sa.get(name)), "B": cell(sb.get(name))}
                           for name in sorted(set(sa) | set(sb))]), hide_index=True, width="stretch")

ids = [str(chosen[0]["experiment_id"]), str(chosen[1]["experiment_id"])]
rows = c.fresh(q.experiment_cases(db, ids))
if rows.empty:
    st.info("No cases stored for these experiments.")
    st.stop()
rows["side"] = rows["experiment_id"].map({ids[0]: "A", ids[1]: "B"})
scored = rows.dropna(subset=["detector"]).pivot_table(index=["case_id", "side"], columns="detector", values="score",
                                                      aggfunc="max")
texts = rows.drop_duplicates(["case_id", "side"]).set_index(["case_id", "side"])[["input", "output", "status"]]
both = texts.join(scored).reset_index()
wide = both.pivot_table(index="case_id", columns="side", values=[c for c in both.columns if c not in ("case_id", "side")],
                        aggfunc="first")
wide.columns = [f"{value} {side}" for value, side in wide.columns]
wide = wide.reset_index()
only_changed = st.toggle("Only cases where a signal changed", value=False, key="experiment_changed")
signal_names = sorted({col[:-2] for col in wide.columns if col.endswith((" A", " B"))} - {"input", "output", "status"})
if only_changed:
    changed = pd.Series(False, index=wide.index)
    for name in signal_names:
        if f"{name} A" in wide and f"{name} B" in wide:
            changed |= (wide[f"{name} A"] >= 0.5) != (wide[f"{name} B"] >= 0.5)
    wide = wide[changed]
order = ["case_id", "input A", "output A", "output B", *[f"{n} {s}" for n in signal_names for s in "AB" if f"{n} {s}" in wide]]
st.dataframe(wide[[col for col in order if col in wide]], hide_index=True, width="stretch")
