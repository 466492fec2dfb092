"""Who is using the app, for per-person runs on a shared server.

The identity comes from the first of these that the server is set up for:

1. **A login proxy** (nginx, Caddy) that authenticates people and passes the user name in
   a header. Only when `LOTTERY_TRUST_USER_HEADER` names that header (e.g. `X-Remote-User`)
   and the request also carries `X-Lottery-Proxy: $LOTTERY_PROXY_SECRET`, a secret only
   the proxy sets: a request straight to the app's port, forged header or not, is not
   trusted. Without the setting any such header is ignored.
2. **Streamlit's own login** (`st.login`, OIDC) when `[auth]` is in `.streamlit/secrets.toml`:
   the logged-in user's e-mail (else the `sub` claim).
3. **A name typed in the sidebar**, once per browser: a cookie (`lottery_name`, 12 hours)
   keeps it across reloads. It labels runs and keeps people from touching each other's
   runs by mistake; it is not a login (anyone may type any name).

In modes 1 and 2 the pages do not show without an identity; in mode 3 they do not when the
server is a class server (`LOTTERY_TEACHERS` set), until a name is typed. Names are checked
by engine.owners.check_name (no HTML, path separators, control characters; ≤ 64 characters)
and are never part of a path. `LOTTERY_TEACHERS=alice,bob` names the teachers, who see and
manage every run and have no per-person cap.
"""

from __future__ import annotations

import hmac
import json
import os
import urllib.parse
from collections.abc import Mapping

import streamlit as st

from engine import owners
from ui import md

TRUST_ENV = "LOTTERY_TRUST_USER_HEADER"
SECRET_ENV = "LOTTERY_PROXY_SECRET"
PROXY_HEADER = "X-Lottery-Proxy"
NAME_KEY = "identity.name"
COOKIE = "lottery_name"          # the typed name, so a reload does not ask again
COOKIE_SECONDS = 12 * 3600
_FORGET = "identity.forget"      # "Change name" pressed: the cookie this session started with no longer counts
_REMEMBER = "identity.remember"  # a name to write into the cookie on the next run


def _values(headers: Mapping, name: str) -> list[str]:
    """Every value of a header (case-insensitive). Streamlit's headers object has get_all."""
    if hasattr(headers, "get_all"):
        return list(headers.get_all(name))
    return [v for k, v in headers.items() if k.lower() == name.lower()]


def user_from_headers(headers: Mapping, env: Mapping = os.environ) -> tuple[str | None, str | None]:
    """(user, problem) from a request's headers under the trust setting in `env`.

    No setting: (None, None), whatever the headers say. With it, the user header counts
    only next to the proxy's secret header; a missing or wrong secret, a repeated header
    or a name that check_name refuses gives (None, why)."""
    header = (env.get(TRUST_ENV) or "").strip()
    if not header:
        return None, None
    secret = env.get(SECRET_ENV) or ""
    if not secret:
        return None, (f"{TRUST_ENV} is set but {SECRET_ENV} is not: the app cannot tell the login proxy's "
                      f"requests from forged ones, so it trusts no user header (see docs/class-server.md)")
    sent = _values(headers, PROXY_HEADER)
    if len(sent) != 1 or not hmac.compare_digest(sent[0].encode(), secret.encode()):
        return None, ("this request did not come through the login proxy (no valid proxy header); open the "
                      "app at the proxy's address")
    users = _values(headers, header)
    if len(users) != 1 or not users[0].strip():
        return None, f"the login proxy passed no single user name in {header}"
    try:
        return owners.check_name(users[0], f"the user name in {header}"), None
    except owners.OwnerError as e:
        return None, str(e)


def auth_configured() -> bool:
    """True when Streamlit's OIDC login is set up ([auth] in secrets.toml)."""
    try:
        from streamlit.auth_util import get_secrets_auth_section
        return bool(get_secrets_auth_section())
    except Exception:  # noqa: BLE001 - no secrets file, or an older Streamlit: no login
        return False


def mode() -> str:
    """'proxy', 'oidc' or 'name': where the identity comes from on this server."""
    if (os.environ.get(TRUST_ENV) or "").strip():
        return "proxy"
    return "oidc" if auth_configured() else "name"


def _oidc_user() -> tuple[str | None, str | None]:
    if not st.user.get("is_logged_in"):
        return None, None
    claim = st.user.get("email") or st.user.get("sub")
    try:
        return owners.check_name(str(claim or ""), "your login's e-mail"), None
    except owners.OwnerError as e:
        return None, str(e)


def identify() -> tuple[str | None, str | None]:
    """(user, problem) for this browser session."""
    m = mode()
    if m == "proxy":
        return user_from_headers(st.context.headers)
    if m == "oidc":
        return _oidc_user()
    name = st.session_state.get(NAME_KEY)
    if name is None and not st.session_state.get(_FORGET):
        name = _remembered()
        if name is not None:
            st.session_state[NAME_KEY] = name
    return name, None


def _remembered() -> str | None:
    """The name this browser typed earlier (its cookie), checked like a typed one."""
    try:
        raw = st.context.cookies.get(COOKIE)
    except Exception:  # noqa: BLE001 - no browser request behind this session (e.g. tests)
        return None
    if not raw:
        return None
    try:
        return owners.check_name(urllib.parse.unquote(raw))
    except owners.OwnerError:
        return None


def _write_cookie(name: str | None) -> None:
    """Set (or, with None, delete) the name's cookie in this browser. Names are checked
    (letters, digits, a few marks) and JSON-quoted, so nothing else reaches the script."""
    value = json.dumps(urllib.parse.quote(name or ""))
    age = COOKIE_SECONDS if name else 0
    st.sidebar.html(f"<script>document.cookie = '{COOKIE}=' + {value} + "
                    f"'; path=/; max-age={age}; SameSite=Strict';</script>", unsafe_allow_javascript=True)


def current_user() -> str | None:
    """The person using this session, or None when nobody is known."""
    return identify()[0]


def is_teacher(user: str | None) -> bool:
    try:
        return owners.is_teacher(user)
    except owners.OwnerError:       # a bad LOTTERY_TEACHERS: nobody is a teacher (the sidebar says why)
        return False


def in_use() -> bool:
    """True on a server set up for several people: identity from a proxy or a login, or
    teachers named. Then the pages need an identity to show."""
    return owners.shared_server() or mode() == "oidc"


def may_manage(run: dict, user: str | None = None) -> bool:
    """Whether this session may cancel, resume or delete `run` (what engine.jobs enforces)."""
    user = current_user() if user is None else user
    return owners.may_manage(run, user, is_teacher(user))


def why_not(run: dict, what: str) -> str:
    owner = run.get("owner")
    return (f"Only {md.esc(owner)} (its owner) or a teacher may {what} this run." if owner else
            f"This run has no owner: only a teacher may {what} it.")


# ------------------------------------------------------------------ the sidebar

def sidebar(presenting: bool = False) -> bool:
    """Draw who is signed in (or ask), in the sidebar. Returns False when the page must
    not show (no identity where one is needed); the main area then says why. In the
    presentation view the sidebar is hidden, so what must be asked is asked on the page."""
    ask = st.container() if presenting else st.sidebar
    m = mode()
    user, problem = identify()
    try:
        owners.teachers()
    except owners.OwnerError as e:
        st.sidebar.error(md.esc(e))
    if user:
        role = " · teacher" if is_teacher(user) else ""
        where = {"proxy": "from the login proxy", "oidc": "logged in", "name": "typed in this browser"}[m]
        st.sidebar.caption(f"👤 **{md.esc(user)}**{role} ({where})")
        if m == "oidc" and st.sidebar.button("Log out", key="identity.logout"):
            st.logout()
        if m == "name" and _REMEMBER in st.session_state:
            _write_cookie(st.session_state.pop(_REMEMBER))
        if m == "name" and st.sidebar.button("Change name", key="identity.change"):
            st.session_state.pop(NAME_KEY, None)
            st.session_state[_FORGET] = True
            st.session_state[_REMEMBER] = None
            st.rerun()
        return True
    if m == "name" and st.session_state.get(_REMEMBER, "") is None:
        _write_cookie(st.session_state.pop(_REMEMBER))       # "Change name": forget it in this browser too
    if m == "proxy":
        st.error(md.esc(problem or "no user name from the login proxy"), icon="🔒")
        return False
    if m == "oidc":
        if problem:
            st.sidebar.error(md.esc(problem))
        if ask.button("Log in", key="identity.login", type="primary"):
            st.login()
        st.info(f"Log in {'above' if presenting else '(sidebar)'} to use this server: runs are kept per person.",
                icon="🔒")
        return False
    if in_use():
        _name_form(ask)
        st.info(f"Type your name {'above' if presenting else 'in the sidebar'} first: on this server each "
                "person's runs are their own.", icon="👤")
        return False
    _name_form(st.sidebar.expander("👤 Your name (optional)"))     # a personal machine: nothing needs it
    return True


def _name_form(where) -> None:
    with where.form("identity.form", border=False):
        raw = st.text_input("Your name", key="identity.input",
                            placeholder="e.g. Ana",
                            help="Labels the runs you launch, and keeps others' runs safe from your clicks (and "
                                 "yours from theirs). This browser keeps it for 12 hours (a cookie); not a password.")
        if st.form_submit_button("Use this name"):
            try:
                st.session_state[NAME_KEY] = st.session_state[_REMEMBER] = owners.check_name(raw)
            except owners.OwnerError as e:
                st.error(md.esc(e))
            else:
                st.rerun()
