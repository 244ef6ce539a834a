"""What every console page shares: settings, the store, cached queries, the signed-in user, and
the time range and filters kept in the URL. The Streamlit edge of the console."""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pandas as pd
import streamlit as st

from llmwatch.core.accounts import LoginThrottle, User, allowed, hash_password, oidc_role, verify
from llmwatch.core.processes import is_loopback
from llmwatch.core.settings import Settings
from llmwatch.dashboards import queries
from llmwatch.dashboards.markup import md
from llmwatch.dashboards.scope import DIMENSIONS, RANGES, Scope, scope_from_params
from llmwatch.storage.clickhouse import ClickHouseStore, connect

__all__ = ["can", "fresh", "query", "scope_picker", "settings", "sign_in", "sql_store", "store", "user"]


@st.cache_resource
def settings() -> Settings:
    return Settings.from_env(os.environ)


@st.cache_resource
def store() -> ClickHouseStore:
    return connect(settings())


@st.cache_resource
def sql_store() -> ClickHouseStore:
    """The SQL page's own client: its user may be a read-only ClickHouse user."""
    s = settings()
    return ClickHouseStore(s.store_url, s.database, user=s.console_sql_user or s.clickhouse_user,
                           password=s.console_sql_password if s.console_sql_user else s.store_password,
                           query_timeout_s=s.console_sql_timeout_s + 5)


@cache
def _cached_query() -> Callable[[str, dict[str, Any]], pd.DataFrame]:
    @st.cache_data(ttl=settings().console_cache_s, show_spinner=False, max_entries=500)
    def run(sql: str, params: dict[str, Any]) -> pd.DataFrame:
        return store().query_df(sql, params)

    return run


def query(built: tuple[str, dict[str, Any]]) -> pd.DataFrame:
    """A query from dashboards.queries, its result reused for --console-cache-s."""
    sql, params = built
    return _cached_query()(sql, params)


def fresh(built: tuple[str, dict[str, Any]]) -> pd.DataFrame:
    """A query run now, for what a user just changed (review queue, releases)."""
    sql, params = built
    return store().query_df(sql, params)


# --- who is signed in -------------------------------------------------------------------------

def _oidc_configured() -> bool:
    try:
        return "auth" in st.secrets
    except Exception:  # no secrets.toml at all
        return False


@cache
def _throttle() -> LoginThrottle:
    """One per console process: shared by every browser session, unlike st.session_state."""
    return LoginThrottle()


@cache
def _decoy_hash() -> str:
    return hash_password(secrets.token_hex(16))


def sign_in() -> User | None:
    """The signed-in user, or None after drawing the login form (the caller stops)."""
    s = settings()
    if "user" in st.session_state:
        return st.session_state["user"]
    if _oidc_configured() and st.user.is_logged_in:
        verified = st.user.get("email_verified") is True
        email = st.user.get("email")
        role = oidc_role(email if isinstance(email, str) else None, s.console_oidc_roles, verified=verified)
        if not role:
            reason = ("has no role in this console; ask an admin to add it to --console-oidc-roles" if verified
                      else "is not verified by the sign-in provider, so it cannot be given a role")
            st.error(f"{md(st.user.get('email'))} {reason}.")
            st.button("Log out", on_click=st.logout)
            return None
        st.session_state["user"] = User(str(st.user.get("email")), role)
        return st.session_state["user"]
    accounts = s.console_accounts
    if not accounts and not _oidc_configured():
        if not is_loopback(s.host):
            st.error("No console users are configured (--console-users), and the console listens beyond this "
                     "machine, so it stays locked. See docs/console.md.")
            return None
        st.session_state["user"] = User("local", "admin")
        return st.session_state["user"]
    st.title("llmwatch")
    if _oidc_configured():
        st.button("Log in with single sign-on", on_click=st.login, type="primary")
    if accounts:
        with st.form("login"):
            name = st.text_input("User")
            password = st.text_input("Password", type="password")
            submitted = st.form_submit_button("Log in", type="primary")
        if submitted:
            waiting = _throttle().locked_for(name, time.monotonic())
            if waiting:
                st.error(f"Too many failed sign-ins for this user: try again in {waiting:.0f} s.")
                return None
            account = accounts.get(name)
            # An unknown user costs the same scrypt as a known one: timing does not tell them apart.
            if verify(password, account.password_hash if account else _decoy_hash()) and account is not None:
                _throttle().succeeded(name)
                st.session_state["user"] = account
                st.rerun()
            _throttle().failed(name, time.monotonic())
            time.sleep(1.0)  # slows guessing; the same answer for a wrong user and a wrong password
            st.error("Wrong user or password.")
    return None


def user() -> User:
    return st.session_state["user"]


def can(action: str) -> bool:
    return allowed(user().role, action)


# --- the scope in the URL ---------------------------------------------------------------------

def _now() -> datetime:
    # Floored to the cache lifetime: renders within it ask the same question and share results.
    step = max(1.0, settings().console_cache_s)
    return datetime.fromtimestamp(time.time() // step * step, tz=UTC)


def scope_picker(dimensions: tuple[str, ...] = DIMENSIONS) -> Scope:
    """Sidebar time range and filters, initialised from and written back to the URL."""
    params = {k: st.query_params[k] for k in st.query_params}
    scope, problems = scope_from_params(params, _now())
    for problem in problems:
        st.sidebar.warning(problem)
    options = [*RANGES, "custom"]
    choice = st.sidebar.selectbox("Time range", options, index=options.index(scope.range_name), key="range")
    if choice == "custom":
        start = st.sidebar.text_input("From (UTC)", scope.start.strftime("%Y-%m-%dT%H:%M"), key="from")
        end = st.sidebar.text_input("To (UTC)", scope.end.strftime("%Y-%m-%dT%H:%M"), key="to")
        params.update({"range": "custom", "from": start, "to": end})
    else:
        params = {k: v for k, v in params.items() if k not in ("from", "to")}
        params["range"] = choice
    scope, problems = scope_from_params(params, _now())
    for problem in problems:
        st.sidebar.warning(problem)
    filters: dict[str, tuple[str, ...]] = {}
    for dimension in dimensions:
        narrower = Scope(scope.start, scope.end, scope.range_name, filters)
        seen = query(queries.dimension_values(settings().database, dimension, narrower))[dimension].tolist()
        chosen = [v for v in scope.filters.get(dimension, ()) if v]
        picked = st.sidebar.multiselect(dimension.capitalize(), sorted(set(seen) | set(chosen)), default=chosen,
                                        key=f"filter_{dimension}")
        if picked:
            filters[dimension] = tuple(picked)
    scope = Scope(scope.start, scope.end, scope.range_name, filters)
    keep = {k: st.query_params[k] for k in st.query_params if k not in ("range", "from", "to", *DIMENSIONS)}
    desired = {**keep, **scope.to_params()}
    if desired != {k: st.query_params[k] for k in st.query_params}:
        st.query_params.from_dict(desired)
    st.sidebar.caption(f"{scope.start:%Y-%m-%d %H:%M} – {scope.end:%Y-%m-%d %H:%M} UTC · share this view by its URL")
    return scope


def compact(n: float) -> str:
    """12,345 -> 12.3k; 3,320,000 -> 3.32M: metric values that fit a column."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.3g}{suffix}"
    return f"{n:.0f}"


def dollars(amount: float) -> str:
    return f"${amount:,.2f}" if amount < 100 else f"${compact(amount)}" if amount >= 10_000 else f"${amount:,.0f}"


def duration_ms(ms: float | None) -> str:
    if ms is None or ms != ms:
        return "–"
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


def percent(part: float, whole: float) -> str:
    return f"{100 * part / whole:.2f}%" if whole else "–"
