"""Alerts: open and recent incidents with their numbers and timeline; acknowledge (reviewers) and
silence (admins), both recorded in alert_actions and the audit log."""

import json
from datetime import UTC, datetime, timedelta

import pandas as pd
import streamlit as st

from llmwatch.alerts.silences import ALL_GROUPS, acknowledge, load_mutes, silence, unsilence
from llmwatch.dashboards import console as c
from llmwatch.dashboards import queries as q
from llmwatch.dashboards.charts import over_time
from llmwatch.dashboards.markup import md

db = c.settings().database
st.title("Alerts")

latest = c.fresh(q.incidents(db, open_only=False))
if latest.empty:
    st.info("No rule has left the ok state yet. Rules: docs/alerts.md.")
    st.stop()
latest["group"] = latest["labels"].map(lambda labels: ", ".join(f"{k}={v}" for k, v in sorted(dict(labels).items())) or "(all)")
open_ = latest[latest["status"].isin(["pending", "firing"])]
counts = st.columns(3)
counts[0].metric("Firing", int((open_["status"] == "firing").sum()))
counts[1].metric("Pending", int((open_["status"] == "pending").sum()))
counts[2].metric("Rules with incidents", latest["rule"].nunique())

columns = ["rule", "group", "status", "level", "value", "threshold", "samples", "since", "last_change"]
numbers = {name: st.column_config.NumberColumn(format="%.4g") for name in ("value", "threshold")}
st.subheader("Open")
if open_.empty:
    st.success("Nothing open.")
else:
    st.dataframe(open_[columns], hide_index=True, width="stretch", column_config=numbers)
st.subheader("All incidents, latest state")
picked = st.dataframe(latest[columns], hide_index=True, width="stretch", on_select="rerun",
                      selection_mode="single-row", key="incident", column_config=numbers)
rows = picked.selection.rows if picked else []
wanted = json.loads(st.query_params.get("alert", "{}") or "{}")  # links from notifications
if rows:
    incident = latest.iloc[rows[0]]
else:
    match = latest[(latest["rule"] == wanted.get("rule")) & (latest["labels"].map(dict) == {k: v for k, v in wanted.items() if k != "rule"})]
    incident = (match if not match.empty else (open_ if not open_.empty else latest)).iloc[0]
st.query_params["alert"] = json.dumps({"rule": incident["rule"], **dict(incident["labels"])}, separators=(",", ":"))

rule, group_key = incident["rule"], incident["group_key"]
st.header(f"{md(rule)} · {md(incident['group'])}")
history = c.fresh(q.alert_history(db, rule, group_key))
chart = history.dropna(subset=["value"])
if not chart.empty:
    over_time(chart.melt(id_vars="at", value_vars=["value", "threshold"], var_name="series", value_name="amount"),
              "at", "amount", "series", y_title=incident["rule"])
st.dataframe(history, hide_index=True, width="stretch")

now = datetime.now(UTC)
mutes = load_mutes(c.store(), rule, now)
silenced_here = group_key in mutes.silenced or ALL_GROUPS in mutes.silenced
if silenced_here:
    st.warning("Notifications of this incident are silenced.")
if group_key in mutes.acknowledged:
    st.info(f"Acknowledged at {mutes.acknowledged[group_key]:%Y-%m-%d %H:%M:%S} UTC: no reminders for this incident.")

left, right = st.columns(2)
with left.form("acknowledge"):
    st.markdown("**Acknowledge**: you are on it; reminders stop, changes and the resolution are still sent.")
    note = st.text_input("Note", key="ack_note")
    if st.form_submit_button("Acknowledge", disabled=not c.can("acknowledge")):
        acknowledge(c.store(), rule, group_key, c.user().name, note)
        st.toast("Acknowledged")
        st.rerun()
with right.form("silence"):
    st.markdown("**Silence**: no notifications at all until it ends; the rule still evaluates and acts.")
    hours = st.number_input("Hours", min_value=0.25, max_value=24.0 * 30, value=2.0, step=0.25, key="silence_hours")
    scope = st.radio("For", ["this group", "every group of the rule"], horizontal=True, key="silence_scope")
    reason = st.text_input("Reason", key="silence_reason")
    allowed = c.can("silence")
    if st.form_submit_button("Silence", disabled=not allowed):
        if not reason.strip():
            st.error("Say why: the reason goes into the audit log.")
        else:
            target = group_key if scope == "this group" else ALL_GROUPS
            silence(c.store(), rule, target, now + timedelta(hours=hours), c.user().name, reason.strip())
            st.toast("Silenced")
            st.rerun()
    if not allowed:
        st.caption("Silencing needs the admin role.")
if silenced_here and c.can("silence") and st.button("Lift the silence", key="unsilence"):
    for target in (group_key, ALL_GROUPS):
        if target in mutes.silenced:
            unsilence(c.store(), rule, target, c.user().name)
    st.rerun()

st.subheader("Recorded actions")
log = c.fresh(q.audit_log(db, actions=("acknowledge", "silence", "unsilence"), limit=50))
st.dataframe(log if not log.empty else pd.DataFrame(columns=["at", "actor", "action", "details"]), hide_index=True,
             width="stretch")
