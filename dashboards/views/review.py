"""Review queue: one event at a time, decided with the keyboard (f fine, t toxic, h hallucinated,
o other + note); each item needs --review-decisions reviewers; agreement and the labelled dataset."""

import json

import streamlit as st

from llmwatch.dashboards import console as c
from llmwatch.dashboards import queries as q
from llmwatch.dashboards import reviews
from llmwatch.dashboards.markup import md

settings = c.settings()
db = settings.database
st.title("Review queue")

backlog = int(c.fresh(q.review_backlog(db, settings.review_decisions)).iat[0, 0])
st.caption(f"{backlog} event(s) still need decisions · each needs {settings.review_decisions} reviewer(s)")

if not c.can("review"):
    st.info("Deciding needs the reviewer role; you can see the agreement and the dataset below.")
else:
    item = c.fresh(q.review_next(db, c.user().name, settings.review_decisions))
    if item.empty:
        st.success("Nothing left for you to review.")
    else:
        queued = item.iloc[0]
        event_id = str(queued["event_id"])
        detail = c.fresh(q.trace_detail(db, event_id))
        scores = c.fresh(q.score_details(db, event_id))
        st.subheader(f"{md(queued['app'])} · {md(queued['release'] or 'no release')}")
        st.caption(f"queued by {md(queued['rule'])} ({md(queued['reason'])}) at {queued['queued_at']:%Y-%m-%d %H:%M:%S} · event {event_id}")
        if detail.empty:
            st.warning("The event's text has expired or is not stored yet; decide on the scores, or skip with `other`.")
        else:
            t = detail.iloc[0]
            left, right = st.columns([3, 2])
            with left:
                st.markdown("**Input**")
                st.text(t["input"])
                st.markdown("**Output**")
                st.text(t["output"])
            with right:
                st.markdown("**Scores**")
                st.dataframe(scores[["detector", "target", "score", "label"]], hide_index=True, width="stretch")
                for row in scores.itertuples():
                    if row.detector == "grounding" and row.details:
                        for claim in json.loads(row.details).get("unsupported", []):
                            st.markdown(f"- unsupported: *{md(claim['claim'])}* (missing: {md(', '.join(claim['missing']))})")
                for i, passage in enumerate(list(t["context"] or [])):
                    with st.expander(f"context passage {i + 1}"):
                        st.text(passage)
        note = st.text_input("Note (needed for other)", key=f"note_{event_id}")
        buttons = st.columns(len(reviews.DECISIONS))
        chosen = None
        for column, decision in zip(buttons, reviews.DECISIONS):
            if column.button(decision.capitalize(), key=f"decide_{decision}",
                             shortcut=decision[0], width="stretch", type="primary" if decision == "fine" else "secondary"):
                chosen = decision
        if chosen:
            try:
                reviews.record(c.store(), event_id, c.user().name, queued["app"], queued["release"], chosen, note)
            except ValueError as exc:
                st.error(str(exc))
            else:
                st.toast(f"{chosen}: saved")
                st.rerun()

st.header("Agreement")
decided = c.fresh(q.decisions(db))
if decided.empty:
    st.caption("No decisions yet.")
    st.stop()
measured = reviews.agreement(decided)
cols = st.columns(4)
cols[0].metric("Decisions", len(decided))
cols[1].metric("Items with 2+ reviewers", measured["items_with_2_plus"])
fleiss = measured["fleiss_kappa"]
cols[2].metric("Fleiss' kappa", f"{fleiss:.2f}" if fleiss is not None else "–")
if "cohen_kappa" in measured:
    a, b = measured["pair"]
    cols[3].metric(f"Cohen's kappa {a} vs {b}", f"{measured['cohen_kappa']:.2f}", f"{measured['pair_items']} items",
                   delta_color="off")
st.bar_chart(decided.groupby(["reviewer", "decision"]).size().rename("n").reset_index(), x="reviewer", y="n",
             color="decision")

if c.can("export"):
    # Built when clicked, not on every render: the dataset reads the texts of every reviewed event.
    def dataset():  # noqa: ANN202
        return reviews.dataset(c.store().query_df(*q.reviews(db)))

    left, right = st.columns(2)
    left.download_button("Labelled dataset (JSONL)", lambda: reviews.to_jsonl(dataset()), "llmwatch-reviews.jsonl",
                         "application/jsonl", key="export_jsonl", on_click="ignore")
    right.download_button("Labelled dataset (Parquet)", lambda: reviews.to_parquet(dataset()), "llmwatch-reviews.parquet",
                          "application/vnd.apache.parquet", key="export_parquet", on_click="ignore")
