"""Traces: search by app, release, model, user, time, score ranges and text; one trace in full,
with every score, the unsupported claims marked in the answer, redactions and feedback."""

import html
import json
import re
import uuid

import pandas as pd
import streamlit as st

from llmwatch.dashboards import console as c
from llmwatch.dashboards import queries as q
from llmwatch.dashboards.markup import html_block, md
from llmwatch.dashboards.trees import waterfall, waterfall_html
from llmwatch.detectors.injection import sentences
from llmwatch.detectors.pii import KINDS

db = c.settings().database
scope = c.scope_picker()
st.title("Traces")

with st.container(border=True):
    left, middle, right = st.columns([3, 2, 2])
    text = left.text_input("Text contains", key="text", placeholder="a word in the input or output")
    user_id = middle.text_input("User", key="user_id")
    limit = right.select_slider("Show", [50, 100, 200, 500], value=100, key="limit")
    ranges = {}
    columns = st.columns(4)
    for column, detector in zip(columns, ("toxicity", "grounding", "injection", "anomaly")):
        low, high = column.slider(f"{detector} score", 0.0, 1.0, (0.0, 1.0), step=0.05, key=f"score_{detector}")
        if (low, high) != (0.0, 1.0):
            ranges[detector] = (low, high)

found = c.query(q.trace_search(scope, db, text=text.strip(), user_id=user_id.strip(), scores=ranges, limit=limit))
st.caption(f"{len(found)} newest matching trace(s)" + (" (limit reached: narrow the search)" if len(found) == limit else ""))
rows: list[int] = []
if found.empty:
    st.info("No traces match.")
else:
    scores = c.query(q.trace_scores(db, [str(e) for e in found["event_id"]]))
    if not scores.empty:
        scores["column"] = scores["detector"] + scores["target"].map(lambda t: "" if t in ("", "output") else f" ({t})")
        wide = scores.pivot_table(index="event_id", columns="column", values="score", aggfunc="max")
        found = found.merge(wide, left_on="event_id", right_index=True, how="left")
    found["event_id"] = found["event_id"].astype(str)
    first = ["timestamp", "app", "release", *sorted(set(found.columns) - set(q.TRACE_COLUMNS)), "input", "output"]
    found = found[first + [name for name in found.columns if name not in first]]
    picked = st.dataframe(found, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row",
                          key="found",
                          column_config={"timestamp": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})
    rows = picked.selection.rows if picked else []
    if c.can("review"):
        with st.expander("Add these traces to a dataset"):
            name = st.text_input("Dataset", key="dataset_name", placeholder="e.g. support-gate")
            if st.button(f"Add {len(found)} trace(s)", key="dataset_add", disabled=not name.strip()):
                from llmwatch.alerts.datasets import add_cases, cases_from_events
                from llmwatch.core.errors import ConfigError

                try:
                    version, total = add_cases(c.store(), name.strip(), cases_from_events(c.store(), list(found["event_id"])),
                                               c.user().name)
                except ConfigError as exc:
                    st.error(str(exc))
                else:
                    st.success(f"{md(name.strip())} v{version} holds {total} case(s).")
# A selected row, or the trace a shared link names (it may lie outside the current search).
event_id = found.iloc[rows[0]]["event_id"] if rows else st.query_params.get("event")
if not event_id:
    st.caption("Select a row to see the whole trace.")
    st.stop()
try:
    event_id = str(uuid.UUID(str(event_id)))
except ValueError:
    st.warning(f"{md(repr(event_id))} in the link is not an event id.")
    st.stop()
st.query_params["event"] = event_id

detail = c.query(q.trace_detail(db, event_id))
if detail.empty:
    st.warning(f"Trace event {md(event_id)} is not in the store.")
    st.stop()
t = detail.iloc[0]
details = c.query(q.score_details(db, event_id))

st.divider()
st.subheader(f"{md(t['app'])} · {md(t['release'] or 'no release')} · {t['timestamp']:%Y-%m-%d %H:%M:%S} UTC")
st.caption(f"event {t['event_id']} · trace {md(t['trace_id'])} · user {md(t['user_id'] or '–')} · "
           f"{t['latency_ms'] or 0:.0f} ms · {int(t['input_tokens'] or 0)}+{int(t['output_tokens'] or 0)} tokens · "
           f"${t['cost_usd'] or 0:.4f}")
if t["error"]:
    st.warning(f"The call failed: {md(t['error'])}", icon=":material/error:")
pii = {k: v for k, v in dict(t["pii"] or {}).items() if v}
if pii:
    st.warning("Redacted before storage: " + ", ".join(f"{n} {md(kind)}" for kind, n in pii.items())
               + ". Marks like [EMAIL] show where.")

steps = waterfall(c.query(q.trace_steps(db, t["trace_id"])).to_dict("records"))
if len(steps) > 1:
    step_scores = c.query(q.trace_scores(db, [s.event_id for s in steps if s.event_id]))
    bad_labels = {bad for _, bad, _ in q.LABELS.values()}
    notes = {  # each LLM call's scores, a bad label named first
        str(e): ", ".join(f"{r.label} " * (r.label in bad_labels) + f"{r.detector}"
                          + (f" ({r.target})" if r.target in ("input", "context") else "") + f" {r.score:.2f}"
                          for r in group.sort_values(["detector", "target"]).itertuples() if pd.notna(r.score))
        for e, group in step_scores.groupby("event_id")
    }
    failed = sum(1 for s in steps if s.error)
    slowest = next((s for s in steps if s.slowest), None)
    st.markdown(f"**Trace** · {len(steps)} steps" + (f" · {failed} failed" if failed else "")
                + (f" · slowest: {md(slowest.name)} ({slowest.duration_ms:,.0f} ms)" if slowest else ""))
    st.markdown(html_block(waterfall_html(steps, notes)), unsafe_allow_html=True)
    llm_steps = {f"{s.name} · {s.start_ms:,.0f} ms": s.event_id for s in steps if s.event_id and s.event_id != event_id}
    if llm_steps:
        def open_step(choices: dict[str, str]) -> None:
            choice = st.session_state.get("step")
            if choice:
                st.query_params["event"] = choices[choice]
                st.session_state.pop("found", None)  # a picked row would win over the link
                st.session_state["step"] = ""

        st.selectbox("Open another LLM call of this trace", ["", *llm_steps], key="step", on_change=open_step,
                     args=(llm_steps,))
if t["session_id"]:
    st.page_link("views/sessions.py", label=f"Session {md(t['session_id'])}", icon=":material/forum:",
                 query_params={"session": t["session_id"], "session_app": t["app"]})

REDACTION = re.compile(r"\[(" + "|".join(k.upper() for k in KINDS) + r")(:[0-9a-f]+)?\]")


def marked(text: str, claims: list[str], why: str = "not supported by the context") -> str:
    """HTML of `text` with `claims` highlighted (titled `why`) and redaction marks tinted, as one
    HTML block: the LLM's Markdown (images that would fetch a URL) is shown, never rendered."""
    escaped = html.escape(text)
    for claim in sorted(set(claims), key=len, reverse=True):
        escaped = escaped.replace(html.escape(claim), f"<mark title='{html.escape(why)}'>{html.escape(claim)}</mark>")
    escaped = REDACTION.sub(lambda m: f"<code>{m.group(0)}</code>", escaped)
    return html_block(escaped)


unsupported = []
injected: dict[str, list[str]] = {}  # "input" or the passage index -> the sentences that triggered it
for row in details.itertuples():
    if row.detector == "grounding" and row.details:
        unsupported = [u.get("claim", "") for u in json.loads(row.details).get("unsupported", [])]
    if row.detector == "injection" and row.label == "injection" and row.details:
        found = json.loads(row.details)
        where = "input" if row.target == "input" else str(found.get("passage", ""))
        # The detector's window joins sentences with spaces: mark each sentence where it stands.
        injected[where] = [s for s in sentences(found.get("span", "")) if len(s) > 3]
INJECTION = "instructions that try to override the app's (prompt injection)"

left, right = st.columns(2)
with left:
    st.markdown("**Input**")
    messages = list(t["input_messages"] or [])
    if messages:
        for role, content in messages:
            with st.chat_message("user" if role == "user" else "assistant" if role == "assistant" else "ai"):
                st.markdown(marked(content, []), unsafe_allow_html=True)
    else:
        st.markdown(marked(t["input"], injected.get("input", []), INJECTION), unsafe_allow_html=True)
    if "input" in injected:
        st.caption("Highlighted: what the injection detector flagged in the input.")
    st.markdown("**Output**" + (f" · {len(unsupported)} unsupported claim(s) highlighted" if unsupported else ""))
    st.markdown(marked(t["output"], unsupported), unsafe_allow_html=True)
with right:
    st.markdown("**Scores**")
    st.dataframe(details[["detector", "target", "score", "label", "detector_version"]], hide_index=True, width="stretch")
    for row in details.itertuples():
        if row.details and row.details != "{}":
            with st.expander(f"{row.detector} ({row.target}) details"):
                st.json(json.loads(row.details))
    context = list(t["context"] or [])
    st.markdown(f"**Retrieved context** ({len(context)} passage(s))")
    for i, passage in enumerate(context):
        name = f"passage {i + 1}" + (f" · {md(t['context_ids'][i])}" if i < len(t["context_ids"]) and t["context_ids"][i] else "")
        flagged = injected.get(str(i), [])
        with st.expander(name + (" · possible injection" if flagged else ""), expanded=bool(flagged)):
            st.markdown(marked(passage, flagged, INJECTION), unsafe_allow_html=True)
    feedback = c.query(q.feedback_for(db, t["trace_id"]))
    st.markdown("**User feedback**")
    if feedback.empty:
        st.caption("none")
    for f in feedback.itertuples():
        st.markdown(f"{'👍' if f.score >= 0.5 else '👎'} {f.score:.2f} · {md(f.comment or '')} ({f.timestamp:%H:%M:%S})")
    if dict(t["tags"] or {}):
        st.markdown("**Tags**")
        st.json(dict(t["tags"]))
