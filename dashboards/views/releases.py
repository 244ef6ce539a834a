"""Releases: each app's releases with status and history, the rollbacks and why, and manual
promote / rollback (admins, after confirming), through the same registry the alert rules use. A
promotion passes the release gate (alerts/gate.py) first, or overrides it with a reason."""

import streamlit as st

from llmwatch.alerts.evaluations import load_evaluations
from llmwatch.alerts.gate import GateRefused, check_gate, promote_through_gate
from llmwatch.alerts.releases import Registry, ReleaseRecord, active_release, rollback_target
from llmwatch.core.errors import ConfigError
from llmwatch.dashboards import console as c
from llmwatch.dashboards import queries as q
from llmwatch.dashboards.markup import md

settings = c.settings()
db = settings.database
st.title("Releases")


@st.cache_resource
def control_producer():  # noqa: ANN201 - a confluent_kafka Producer
    from llmwatch.ingest.kafka import ensure_llmwatch_topics, producer

    ensure_llmwatch_topics(settings, [settings.control_topic])
    return producer(settings.bootstrap_servers)


apps = c.fresh((f"SELECT DISTINCT app FROM {db}.releases ORDER BY app", {}))["app"].tolist()
if not apps:
    st.info("No releases registered. Apps register theirs with llmwatch.announce, or: "
            "`llmwatch release register --app APP --prompt-id ID --prompt-version V --model M --activate`.")
    st.stop()
wanted = st.query_params.get("app")
app = st.selectbox("App", apps, index=apps.index(wanted) if wanted in apps else 0, key="release_app")
st.query_params["app"] = app

registry = Registry(c.store(), settings)
records = registry.releases(app)
active = active_release(records)
st.metric("Serving now", active.release if active else "nothing active")
st.dataframe([{"release": r.release, "status": r.status, "since": r.updated_at, "by": r.actor, "why": r.reason}
              for r in records], hide_index=True, width="stretch")

st.subheader("Rollbacks and promotions")
audit = c.fresh(q.audit_log(db, actions=("rolled_back", "restored", "promoted", "superseded", "registered", "gate_refused",
                                          "gate_overridden", "gate_passed"),
                             app=app, limit=500))
st.dataframe(audit, hide_index=True, width="stretch")

st.subheader("Change what is served")
if not c.can("release"):
    st.caption("Promoting and rolling back need the admin role.")
    st.stop()
action = st.radio("Action", ["promote", "rollback"], horizontal=True, key="release_action")
choices = [r.release for r in records if (r.status != "active" if action == "promote" else r.status == "active")]
if not choices:
    st.caption("Nothing to " + ("promote: no release but the active one." if action == "promote" else "roll back: nothing is active."))
    st.stop()
release = st.selectbox("Release", choices, key="release_target")
reason = st.text_input("Reason (goes to the audit log)", key="release_reason")
fallback = rollback_target(records, release)
consequence = (f"{app} will serve {release}" if action == "promote"
               else f"{app} will go back from {release} to {fallback.release}" if fallback else None)
if consequence is None:
    st.warning(f"{md(app)} has no stable release to return to; a rollback would change nothing.")
    st.stop()
force = False
evaluations, evaluation_errors = load_evaluations(settings.evaluations_path)
if action == "promote":
    gate = check_gate(c.store(), evaluations, registry, app, release)
    if gate.allowed:
        st.success("Release gate: " + "; ".join(gate.reasons))
    else:
        st.error("Release gate: stopped.\n\n" + "\n".join(f"- {md(r)}" for r in gate.reasons))
        force = st.checkbox("Override the gate (the reason below goes to the audit log as the override's)", key="release_force")
        if not force:
            st.stop()
confirmed = st.checkbox(f"Yes: {consequence}. Apps following llm.control switch within seconds.", key="release_confirm")
if st.button(action.capitalize(), type="primary", disabled=not (confirmed and reason.strip()), key="release_go"):
    live = Registry(c.store(), settings, control_producer())
    done: ReleaseRecord | None
    try:
        if action == "promote":
            done, _verdict = promote_through_gate(c.store(), evaluations, live, app, release, c.user().name, reason.strip(), force)
        else:
            done = live.rollback(app, release, c.user().name, reason.strip())
    except (ConfigError, GateRefused) as exc:
        st.error(str(exc))
    else:
        st.success(f"{md(app)} now serves {md(done.release)}." if done else "Nothing changed.")
        for key in ("release_confirm", "release_reason", "release_force"):
            st.session_state.pop(key, None)
        st.rerun()
