"""Time charts in UTC with readable axes and untruncated legends (Streamlit's quick charts show
local time and cut long release names)."""

from __future__ import annotations

from typing import Literal

import altair as alt
import pandas as pd
import streamlit as st

__all__ = ["over_time"]


def over_time(frame: pd.DataFrame, x: str, y: str, color: str, *, kind: Literal["line", "area"] = "line",
              y_title: str | None = None, percent: bool = False, container: st.delta_generator.DeltaGenerator | None = None) -> None:
    """One series per `color` value over time, drawn in `container` (default: the page)."""
    mark = {"line": alt.Chart(frame).mark_line(point=len(frame) < 40),
            "area": alt.Chart(frame).mark_area(opacity=0.8)}[kind]
    span = (frame[x].max() - frame[x].min()) if len(frame) else pd.Timedelta(0)
    fmt = "%H:%M" if span <= pd.Timedelta(days=1) else "%b %d %H:%M"
    chart = mark.encode(
        # labelExpr, not format: Streamlit's theme replaces an axis format, not an expression.
        x=alt.X(f"{x}:T", title=None, scale=alt.Scale(type="utc"),
                axis=alt.Axis(labelExpr=f"utcFormat(datum.value, '{fmt}')", tickCount=6, labelOverlap=True)),
        y=alt.Y(f"{y}:Q", title=y_title or y, stack=kind == "area" or None,
                axis=alt.Axis(format="%" if percent else "~s" if frame[y].abs().max() >= 1000 else "~g")),
        color=alt.Color(f"{color}:N", title=None, legend=alt.Legend(orient="bottom", labelLimit=400, columns=3)),
        tooltip=[alt.Tooltip(f"{x}:T", format="%Y-%m-%d %H:%M:%S", formatType="utc", title="UTC"),
                 alt.Tooltip(f"{color}:N"), alt.Tooltip(f"{y}:Q", format=".3~f")],
    ).properties(height=260)
    (container or st).altair_chart(chart, width="stretch")
