"""SQL: ad-hoc queries, read-only by ClickHouse's own `readonly` setting (it refuses writes, DDL,
table functions and attempts to change settings), with a row and time cap; a table, a quick
chart and a CSV download."""

import pandas as pd
import streamlit as st

from llmwatch.core.errors import StoreError
from llmwatch.dashboards import console as c

settings = c.settings()
db = settings.database
st.title("SQL")
st.caption(f"Read-only · at most {settings.console_sql_max_rows:,} rows · {settings.console_sql_timeout_s:g} s · "
           f"database `{db}` (tables: traces, scores, feedback, embeddings, drift, alerts, releases, reviews, "
           "trace_stats, score_counts, audit_log)")

EXAMPLE = (f"SELECT app, release, sum(events) AS events, round(sum(cost_usd), 2) AS cost\n"
           f"FROM {db}.trace_stats\nWHERE bucket > now() - INTERVAL 1 DAY\nGROUP BY app, release\nORDER BY events DESC")
sql = st.text_area("Query", st.query_params.get("sql", EXAMPLE), height=160, key="sql")
run = st.button("Run", type="primary", shortcut="ctrl+enter", key="run_sql")

# Caps first: once readonly=1 is in force ClickHouse refuses any further setting, the
# user's own SETTINGS clause included.
limits = {
    # One row more than shown: then we know the cap cut the result (ClickHouse stops at a block
    # boundary past it, so the frame is cut to the cap below).
    "max_result_rows": settings.console_sql_max_rows + 1,
    "result_overflow_mode": "break",
    "max_execution_time": settings.console_sql_timeout_s,
    "readonly": 1,
}
if run:
    try:
        st.session_state["sql_result"] = c.sql_store().query_df(sql, settings=limits)
    except StoreError as exc:
        st.session_state.pop("sql_result", None)
        st.error(str(exc).split("(for url")[0])
        st.stop()
    st.query_params["sql"] = sql
if "sql_result" not in st.session_state:
    st.stop()
result: pd.DataFrame = st.session_state["sql_result"]
capped = len(result) > settings.console_sql_max_rows
result = result.head(settings.console_sql_max_rows)
st.caption(f"{len(result):,} row(s)" + (" · capped: more rows matched" if capped else ""))
st.dataframe(result, hide_index=True, width="stretch")
st.download_button("CSV", result.to_csv(index=False).encode(), "llmwatch-query.csv", "text/csv", key="csv")

numeric = result.select_dtypes("number").columns.tolist()
if numeric and len(result.columns) >= 2:
    with st.expander("Quick chart", expanded=True):
        left, middle, right = st.columns(3)
        x = left.selectbox("x", result.columns.tolist(), key="chart_x")
        y = middle.selectbox("y", [n for n in numeric if n != x] or numeric, key="chart_y")
        kind = right.radio("as", ["bar", "line"], horizontal=True, key="chart_kind")
        (st.bar_chart if kind == "bar" else st.line_chart)(result, x=x, y=y)
