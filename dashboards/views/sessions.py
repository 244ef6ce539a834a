"""Sessions: conversations grouped by session_id, newest first, each flagged for toxic turns,
unsupported answers, negative feedback and errors; one session's turns in time order, linked to
their traces."""

import streamlit as st

from llmwatch.dashboards import console as c
from llmwatch.dashboards import queries as q
from llmwatch.dashboards.markup import md

db = c.settings().database
scope = c.scope_picker()
st.title("Sessions")

with st.container(border=True):
    left, middle, right = st.columns([3, 2, 2])
    text = left.text_input("Search", key="session_text", placeholder="a session id, a user, or a word said")
    flagged_only = middle.toggle("Flagged only", key="flagged_only")
    limit = right.select_slider("Show", [50, 100, 200, 500], value=100, key="session_limit")

found = c.query(q.session_list(scope, db, text=text.strip(), flagged_only=flagged_only, limit=limit))
st.caption(f"{len(found)} session(s), newest first" + (" (limit reached: narrow the search)" if len(found) == limit else "")
           + " · events without a session_id are on the Traces page")
rows: list[int] = []
if found.empty:
    st.info("No sessions match. Events join a session through `session_id` (`llmwatch.session(...)` in the SDK, "
            "`session.id` in OpenTelemetry).")
else:
    picked = st.dataframe(
        found, hide_index=True, width="stretch", on_select="rerun", selection_mode="single-row", key="sessions",
        column_config={"started": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss"),
                       "last_turn": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm:ss")})
    rows = picked.selection.rows if picked else []

if rows:
    app, session_id = str(found.iloc[rows[0]]["app"]), str(found.iloc[rows[0]]["session_id"])
else:  # a link from a trace
    app, session_id = st.query_params.get("session_app", ""), st.query_params.get("session", "")
if not session_id:
    st.caption("Select a session to read the conversation.")
    st.stop()
st.query_params["session"], st.query_params["session_app"] = session_id, app

turns = c.query(q.session_turns(db, app, session_id))
st.divider()
st.subheader(f"{md(app)} · session {md(session_id)}")
if turns.empty:
    st.warning("This session has no stored turns (its text may have expired).")
    st.stop()
st.caption(f"{len(turns)} turn(s) · {turns['timestamp'].min():%Y-%m-%d %H:%M:%S} – {turns['timestamp'].max():%H:%M:%S} UTC")
for turn in turns.itertuples():
    flags = [name for name, on in (("toxic", turn.toxic), ("unsupported", turn.unsupported)) if on]
    if turn.error:
        flags.append("error")
    with st.chat_message("user"):
        st.text(turn.input)
    with st.chat_message("assistant"):
        st.text(turn.output or ("(failed: " + turn.error + ")" if turn.error else ""))
        st.caption(f"{turn.timestamp:%H:%M:%S}" + (" · " + ", ".join(flags) if flags else ""))
        st.page_link("views/traces.py", label="Open the trace", icon=":material/manage_search:",
                     query_params={"event": turn.event_id})
