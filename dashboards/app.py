"""The llmwatch console: `llmwatch console` runs `streamlit run dashboards/app.py`.

One page module per view under dashboards/views/, reached through st.navigation. The time
range and filters live in the URL, so any view can be shared by its address.
"""

from __future__ import annotations

import streamlit as st

from llmwatch.dashboards import console
from llmwatch.dashboards.markup import md

st.set_page_config(page_title="llmwatch", page_icon=":material/monitoring:", layout="wide")

signed_in = console.sign_in()
if signed_in is None:
    st.stop()

PAGES = {
    "Monitor": [
        st.Page("views/overview.py", title="Overview", icon=":material/dashboard:", default=True),
        st.Page("views/traces.py", title="Traces", icon=":material/manage_search:"),
        st.Page("views/sessions.py", title="Sessions", icon=":material/forum:"),
        st.Page("views/quality.py", title="Quality", icon=":material/fact_check:"),
        st.Page("views/drift.py", title="Drift", icon=":material/scatter_plot:"),
    ],
    "Act": [
        st.Page("views/alerts.py", title="Alerts", icon=":material/notifications_active:"),
        st.Page("views/review.py", title="Review queue", icon=":material/rate_review:"),
        st.Page("views/releases.py", title="Releases", icon=":material/rocket_launch:"),
        st.Page("views/experiments.py", title="Experiments", icon=":material/science:"),
    ],
    "Explore": [st.Page("views/sql.py", title="SQL", icon=":material/terminal:")],
}

page = st.navigation(PAGES)
with st.sidebar:
    st.caption(f"Signed in as **{md(signed_in.name)}** ({signed_in.role})")
    if signed_in.name != "local" and st.button("Log out", key="logout"):
        st.session_state.pop("user", None)
        if st.user.is_logged_in:
            st.logout()
        st.rerun()
page.run()
