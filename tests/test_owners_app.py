"""Per-person runs in the app (issue 15, item 4), with Streamlit's AppTest and the real
engine.jobs (the queue is paused with LOTTERY_MAX_RUNS=0, so no worker starts): the name
asked in the sidebar, "My runs" by default, and cancel/delete only on one's own runs
unless a teacher. The trusted-header path is tested end to end in test_proxy_nginx.py;
here its header check is tested as a function."""

from __future__ import annotations

import pytest
from test_app import no_traceback, open_page, plain, routed_by_app_py, texts  # noqa: F401

from engine import runner
from engine.config import RunConfig
from engine.store import Store
from ui import backend, identity

TINY = {"model": "logreg", "dataset": "digits", "method": "dense", "epochs": 1, "batch_size": 256}


@pytest.fixture
def cls(tmp_path, monkeypatch):
    """A class server's store: alice's done and queued runs, bob's done run, a run without an owner."""
    monkeypatch.setenv("LOTTERY_TEACHERS", "tess")
    monkeypatch.setenv("LOTTERY_MAX_RUNS", "0")           # the queue is paused: nothing trains here
    for k in ("LOTTERY_TRUST_USER_HEADER", "LOTTERY_PROXY_SECRET", "LOTTERY_MAX_PER_PERSON"):
        monkeypatch.delenv(k, raising=False)
    home = tmp_path / "h"
    store = Store(home)

    def run(owner, status, seed):
        rid = runner.create(store, RunConfig.from_dict({**TINY, "seed": seed}), status="queued")
        store.update_run(rid, status=status, owner=owner)
        return rid

    ids = {"alice_done": run("alice", "done", 1), "alice_queued": run("alice", "queued", 2),
           "bob_done": run("bob", "done", 3), "nobody": run(None, "done", 4)}
    return home, store, ids


def as_(monkeypatch, home, who, query=None):
    at = open_page(monkeypatch, home, "pages/runs.py", query, session={identity.NAME_KEY: who})
    no_traceback(at)
    return at


def forge(button):
    """What a hand-made WebSocket message can do: press a button the page drew disabled."""
    button.proto.disabled = False
    return button


def test_a_student_sees_own_runs_first_and_cannot_cancel_or_delete_anothers(monkeypatch, cls):
    home, store, ids = cls
    at = as_(monkeypatch, home, "bob")
    assert at.radio(key="runs.whose").value == "My runs"
    assert list(at.dataframe[0].value["owner"]) == ["bob"]
    assert "Your runs (bob): 1 of 4 in the store" in texts(at)
    assert "bob" in plain(at.sidebar.caption[-1].value)
    at.radio(key="runs.whose").set_value("Everyone's").run()
    no_traceback(at)
    assert sorted(at.dataframe[0].value["owner"]) == ["alice", "alice", "bob", "—"]

    at = as_(monkeypatch, home, "bob", {"runs": ",".join([ids["alice_done"], ids["alice_queued"], ids["nobody"],
                                                           ids["bob_done"]])})
    at.radio(key="runs.whose").set_value("Everyone's").run()
    for key in (f"cancel.{ids['alice_queued']}", f"delete.{ids['alice_done']}", f"resume.{ids['alice_done']}"):
        b = at.button(key=key)
        assert b.disabled and "Only alice (its owner) or a teacher may" in plain(b.help)
    b = at.button(key=f"delete.{ids['nobody']}")
    assert b.disabled and "no owner: only a teacher may delete it" in plain(b.help)
    assert at.button(key=f"delete.{ids['bob_done']}").disabled is False    # his own

    # A forged click (a message pressing a disabled button anyway) is dropped by Streamlit ...
    forge(at.button(key=f"delete.{ids['alice_done']}")).click().run()
    no_traceback(at)
    assert f"delete_yes.{ids['alice_done']}" not in [b.key for b in at.button]
    forge(at.button(key=f"cancel.{ids['alice_queued']}")).click().run()
    no_traceback(at)
    assert {r["id"]: r["status"] for r in store.list_runs()} == {ids["alice_done"]: "done", ids["alice_queued"]:
                                                                  "queued", ids["bob_done"]: "done",
                                                                  ids["nobody"]: "done"}
    # ... and so do the functions the page calls
    with pytest.raises(backend.BackendError, match="bob may not delete run"):
        backend.delete(ids["alice_done"], home, actor="bob")
    with pytest.raises(backend.BackendError, match="bob may not cancel run"):
        backend.cancel(ids["alice_queued"], home, actor="bob")
    assert len(store.list_runs()) == 4 and store.run_dir(ids["alice_done"]).exists()

    # his own run: delete works from the page
    at.button(key=f"delete.{ids['bob_done']}").click().run()
    at.button(key=f"delete_yes.{ids['bob_done']}").click().run()
    no_traceback(at)
    assert ids["bob_done"] not in {r["id"] for r in store.list_runs()}


def test_a_teacher_can_cancel_and_delete_anyones(monkeypatch, cls):
    home, store, ids = cls
    at = as_(monkeypatch, home, "tess", {"runs": ",".join([ids["alice_done"], ids["alice_queued"], ids["nobody"]])})
    assert "teacher" in plain(at.sidebar.caption[-1].value)
    at.radio(key="runs.whose").set_value("Everyone's").run()
    assert not any(at.button(key=k).disabled for k in (f"cancel.{ids['alice_queued']}",
                                                       f"delete.{ids['alice_done']}", f"delete.{ids['nobody']}"))
    at.button(key=f"cancel.{ids['alice_queued']}").click().run()
    no_traceback(at)
    assert store.get_run(ids["alice_queued"])["status"] == "cancelled"
    for rid in (ids["alice_done"], ids["nobody"]):
        at.button(key=f"delete.{rid}").click().run()
        at.button(key=f"delete_yes.{rid}").click().run()
        no_traceback(at)
    assert {r["id"] for r in store.list_runs()} == {ids["alice_queued"], ids["bob_done"]}


def test_launch_records_the_owner(monkeypatch, cls):
    home, store, ids = cls
    at = open_page(monkeypatch, home, "pages/launch.py", session={identity.NAME_KEY: "carol"})
    no_traceback(at)
    at.button(key="launch.go").click().run()
    no_traceback(at)
    new = [r for r in store.list_runs() if r["id"] not in ids.values()]
    assert len(new) == 1 and new[0]["owner"] == "carol" and new[0]["status"] == "queued"


def test_on_a_class_server_a_name_is_asked_and_checked(monkeypatch, cls):
    home, store, ids = cls
    at = open_page(monkeypatch, home, "pages/runs.py")
    no_traceback(at)
    assert "Type your name in the sidebar first" in texts(at)
    assert not at.dataframe and not at.get("radio")              # no runs shown, nothing to click
    for bad, why in (("<img src=x onerror=alert(1)>", "may only hold letters, digits"),
                     ("../../alice", "may only hold letters, digits"),
                     ("a" * 5000, "is 5,000 characters long; at most 64")):
        at.sidebar.text_input(key="identity.input").set_value(bad)
        at.sidebar.button[0].click().run()          # the form's "Use this name"
        no_traceback(at)
        assert any(why in plain(e.value) for e in at.sidebar.error), [e.value for e in at.sidebar.error]
        assert identity.NAME_KEY not in at.session_state and not at.dataframe
    at.sidebar.text_input(key="identity.input").set_value("  alice ")
    at.sidebar.button[0].click().run()
    no_traceback(at)
    assert at.session_state[identity.NAME_KEY] == "alice"
    assert sorted(at.dataframe[0].value["owner"]) == ["alice", "alice"]


def test_without_a_class_setting_the_app_works_without_a_name(monkeypatch, cls):
    home, store, ids = cls
    monkeypatch.delenv("LOTTERY_TEACHERS")
    at = open_page(monkeypatch, home, "pages/runs.py", {"runs": ids["alice_done"]})
    no_traceback(at)
    assert len(at.dataframe[0].value) == 4 and not at.get("radio")    # everyone's; no filter without a name
    assert at.button(key=f"delete.{ids['alice_done']}").disabled is False  # single user: unrestricted


# ------------------------------------------------------------------ the trusted header, as a function

SECRET = "s3cret-from-nginx"


def test_a_user_header_counts_only_with_the_trust_setting_and_the_proxy_secret():
    forged = {"X-Remote-User": "alice"}
    assert identity.user_from_headers(forged, env={}) == (None, None)            # no setting: ignored
    assert identity.user_from_headers(forged, env={"LOTTERY_TRUST_USER_HEADER": "X-Remote-User"})[0] is None
    env = {"LOTTERY_TRUST_USER_HEADER": "X-Remote-User", "LOTTERY_PROXY_SECRET": SECRET}
    user, why = identity.user_from_headers(forged, env=env)                    # straight to the app's port
    assert user is None and "did not come through the login proxy" in why
    assert identity.user_from_headers({**forged, "X-Lottery-Proxy": "guess"}, env=env)[0] is None
    assert identity.user_from_headers({"x-remote-user": "alice", "x-lottery-proxy": SECRET}, env=env) == \
        ("alice", None)
    user, why = identity.user_from_headers({"X-Remote-User": "<b>x</b>", "X-Lottery-Proxy": SECRET}, env=env)
    assert user is None and "may only hold" in why
    user, why = identity.user_from_headers({"X-Lottery-Proxy": SECRET}, env=env)
    assert user is None and "no single user name in X-Remote-User" in why


def test_repeated_proxy_headers_are_refused():
    """Issue 23, item 6: with Streamlit's own headers object (which keeps every value of a
    repeated header), two user names, or the secret twice or next to a guess, count as no user."""
    from streamlit.runtime.context import StreamlitHeaders
    env = {"LOTTERY_TRUST_USER_HEADER": "X-Remote-User", "LOTTERY_PROXY_SECRET": SECRET}

    def who(*pairs):
        return identity.user_from_headers(StreamlitHeaders(pairs), env=env)
    assert who(("X-Remote-User", "alice"), ("X-Lottery-Proxy", SECRET)) == ("alice", None)      # the control
    user, why = who(("X-Remote-User", "alice"), ("x-remote-user", "bob"), ("X-Lottery-Proxy", SECRET))
    assert user is None and why == "the login proxy passed no single user name in X-Remote-User"
    for proxy in ((SECRET, SECRET), ("guess", SECRET), (SECRET, "guess")):
        user, why = who(("X-Remote-User", "alice"), *(("X-Lottery-Proxy", v) for v in proxy))
        assert user is None and "did not come through the login proxy" in why, proxy


@pytest.mark.parametrize("raw", [
    "%3Cscript%3Ealert(1)%3C%2Fscript%3E",                     # <script>alert(1)</script>
    "%5BLog%20in%5D(https%3A%2F%2Fevil.example)",               # a Markdown link
    "alice%27%3B%20document.cookie%3D%27x",                    # alice'; document.cookie='x
    "a" * 5000,                                                  # far too long
    "%00alice", "%E2%80%AEalice",                               # NUL, a right-to-left override
    "%ZZ%",                                                      # not even valid %-encoding
])
def test_a_hostile_name_cookie_gives_no_name(monkeypatch, raw):
    """Issue 23, item 6: the remembered-name cookie is user input: refused unless it is a name
    check_name accepts, so it never reaches the page as a name (a good one is the control)."""
    from types import SimpleNamespace

    from streamlit.runtime.context import StreamlitCookies

    def with_cookie(value):
        monkeypatch.setattr(identity, "st", SimpleNamespace(context=SimpleNamespace(
            cookies=StreamlitCookies({identity.COOKIE: value}))))
        return identity._remembered()
    assert with_cookie("Ada%20Lovelace") == "Ada Lovelace"
    assert with_cookie(raw) is None


def test_the_name_cookie_script_carries_only_percent_encoded_text(monkeypatch):
    """What _write_cookie puts into the page: the name %-encoded inside a JSON string, so even
    a name with quotes or markup (never accepted, but the writer must not rely on that) cannot
    end the string or the script."""
    from types import SimpleNamespace
    sent = []
    monkeypatch.setattr(identity, "st", SimpleNamespace(sidebar=SimpleNamespace(
        html=lambda body, **kw: sent.append(body))))
    identity._write_cookie("x'; alert(1); </script><b>\"")
    (script,) = sent
    value = script.split(f"document.cookie = '{identity.COOKIE}=' + ", 1)[1].split(" + ", 1)[0]
    assert value == '"x%27%3B%20alert%281%29%3B%20%3C/script%3E%3Cb%3E%22"'
    assert script.count("<script>") == 1 and script.count("</script>") == 1


# ------------------------------------------------------------------ Streamlit's own login (OIDC)

def _oidc_page(monkeypatch, home, user: dict):
    from streamlit.testing.v1 import AppTest
    from test_app import APP
    monkeypatch.setattr(identity, "auth_configured", lambda: True)      # as with [auth] in secrets.toml
    monkeypatch.setenv("LOTTERY_HOME", str(home))
    at = AppTest.from_file(APP, default_timeout=90)
    at.user = user
    at.run()
    at.switch_page("pages/runs.py")
    at.run()
    no_traceback(at)
    return at


def test_streamlit_login_gives_the_identity(monkeypatch, cls):
    home, store, ids = cls
    at = _oidc_page(monkeypatch, home, {"is_logged_in": False})
    assert "Log in (sidebar) to use this server" in texts(at) and not at.dataframe
    assert at.sidebar.button(key="identity.login") and not at.sidebar.get("text_input")   # no typed names here
    at = _oidc_page(monkeypatch, home, {"is_logged_in": True, "email": "alice"})
    assert list(at.dataframe[0].value["owner"]) == ["alice", "alice"] and "(logged in)" in texts(at)
    at = _oidc_page(monkeypatch, home, {"is_logged_in": True, "email": "<b>eve</b>@x.example"})
    assert not at.dataframe and any("may only hold" in plain(e.value) for e in at.sidebar.error)


def test_a_run_asked_for_by_link_shows_under_my_runs(monkeypatch, cls):
    """Launch's "Open it on Runs" for a config a classmate already ran (dedup reuses it)
    links to their run: under "My runs" the page still shows the run it was sent to."""
    home, store, ids = cls
    at = as_(monkeypatch, home, "bob", {"runs": ids["alice_done"]})
    assert at.radio(key="runs.whose").value == "My runs"
    assert at.multiselect(key="runs.sel").value == [ids["alice_done"]]
    assert sorted(at.dataframe[0].value["owner"]) == ["alice", "bob"]       # his own, and the one asked for
    assert at.button(key=f"delete.{ids['alice_done']}").disabled            # still alice's to manage


def test_in_the_presentation_view_the_name_is_asked_on_the_page(monkeypatch, cls):
    """The presentation view hides the sidebar: a class server asks for the name on the page
    itself, or a teacher projecting the app would face a page that points at a hidden sidebar."""
    home, store, ids = cls
    at = open_page(monkeypatch, home, "pages/runs.py", {"present": "1"})
    no_traceback(at)
    assert "Type your name above first" in texts(at)
    assert not at.sidebar.get("text_input")
    at.text_input(key="identity.input").set_value("tess")
    next(b for b in at.button if b.proto.label == "Use this name").click().run()
    no_traceback(at)
    assert at.session_state[identity.NAME_KEY] == "tess" and at.dataframe       # the page shows


def test_home_says_before_the_click_when_a_preset_exceeds_ones_room(monkeypatch, cls):
    """Cap 3 (the default): "Four families" is 4 new runs, so a student's Launch button is
    disabled and the card says why (before: the click gave an error). alice has 1 queued, so
    she may queue 2 more: the two-run card is still in reach. A teacher has no cap."""
    home, store, ids = cls
    monkeypatch.setenv("LOTTERY_MAX_PER_PERSON", "3")

    def home_as(who):
        at = open_page(monkeypatch, home, "pages/home.py", session={identity.NAME_KEY: who})
        no_traceback(at)
        return at

    at = home_as("bob")                                            # nothing queued: room for 3
    assert at.button(key="preset_families").disabled and not at.button(key="preset_lenet").disabled
    assert "4 new runs, but you may queue 3 more now" in texts(at)
    at = home_as("alice")                                          # 1 queued: room for 2
    assert at.button(key="preset_families").disabled
    assert not at.button(key="preset_lenet").disabled and not at.button(key="preset_digits").disabled
    assert "4 new runs, but you may queue 2 more now" in texts(at)
    at = home_as("tess")                                            # a teacher
    assert not at.button(key="preset_families").disabled and "you may queue" not in texts(at)
    assert backend.room(home, "tess") is None and backend.room(home, "alice") == 2


def test_launch_says_before_the_click_when_the_form_exceeds_ones_room(monkeypatch, cls):
    """The Launch form, cap 2: alice (1 queued) may queue 1 more, so a 3-seed sweep is refused
    on the page, with Launch disabled; one seed fits."""
    home, store, ids = cls
    monkeypatch.setenv("LOTTERY_MAX_PER_PERSON", "2")
    at = open_page(monkeypatch, home, "pages/launch.py", session={identity.NAME_KEY: "alice"})
    no_traceback(at)
    assert not at.button(key="launch.go").disabled
    at.text_input(key="cfg.seeds").set_value("0, 1, 2").run()
    no_traceback(at)
    assert at.button(key="launch.go").disabled
    assert any("3 new runs, but you may queue 1 more now" in plain(w.value) for w in at.warning)


def test_a_page_sweep_says_before_the_click_when_it_exceeds_ones_room(monkeypatch, cls):
    """Theory's planted sweep (14 runs) with cap 3: its button is disabled for a student, with
    the reason beside it; a teacher may run it."""
    home, store, ids = cls
    monkeypatch.setenv("LOTTERY_MAX_PER_PERSON", "3")
    at = open_page(monkeypatch, home, "pages/theory.py", session={identity.NAME_KEY: "bob"})
    no_traceback(at)
    assert at.button(key="theory.go").disabled
    assert "14 new runs, but you may queue 3 more now" in texts(at)
    at = open_page(monkeypatch, home, "pages/theory.py", session={identity.NAME_KEY: "tess"})
    no_traceback(at)
    assert not at.button(key="theory.go").disabled and "you may queue" not in texts(at)
