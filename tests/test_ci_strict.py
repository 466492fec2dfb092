"""Issue 23, item 1: in CI (LOTTERY_CI_STRICT=1, set by .ci/run) a skipped test fails the run,
naming what was missing; a plain local run still skips, saying why. Checked on a small suite run
by a real pytest process with this project's conftest hooks."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

SUITE = {
    "conftest.py": "from tests.conftest import pytest_make_collect_report, pytest_runtest_makereport  # noqa: F401\n",
    "test_some.py": """
import pytest

@pytest.mark.skipif(True, reason="/usr/bin/chromium not found")
def test_browser():
    pass

def test_proxy():
    pytest.skip("nginx is not installed")

@pytest.mark.xfail(reason="a known bug", strict=True)
def test_known_bug():
    assert False

def test_plain():
    assert 1 + 1 == 2
""",
    "test_module_skip.py": "import pytest\npytest.importorskip('no_such_package_for_lottery')\n\n"
                           "def test_never_collected():\n    pass\n",
}


def run_suite(tmp_path: Path, strict: bool, only: str | None = None) -> tuple[int, str]:
    for name, text in SUITE.items():
        (tmp_path / name).write_text(text)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "LOTTERY_CI_STRICT"))}
    env["PYTHONPATH"] = str(ROOT)
    if strict:
        env["LOTTERY_CI_STRICT"] = "1"
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", "-p", "no:xdist",
                        str(tmp_path / (only or ""))],
                       cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    return r.returncode, r.stdout + r.stderr


def counts(out: str) -> dict[str, int]:
    last = [line for line in out.splitlines() if " in " in line and re.search(r"\d+ (passed|failed)", line)][-1]
    return {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|skipped|xfailed|errors?)", last)}


def test_ci_turns_every_skip_into_a_failure_naming_what_is_missing(tmp_path):
    rc, out = run_suite(tmp_path, strict=True, only="test_some.py")
    assert rc == 1, out
    got = counts(out)
    # a skip mark fails the setup (an error), pytest.skip() in the body fails the test; xfail is no skip
    assert got == {"passed": 1, "error": 1, "failed": 1, "xfailed": 1}, (got, out)
    for reason in ("/usr/bin/chromium not found", "nginx is not installed"):
        assert re.search(rf"skipped in CI \(LOTTERY_CI_STRICT=1\).*{re.escape(reason)}", out), (reason, out)
    # a whole module skipped at import stops the run (a collection error), naming what is missing
    rc, out = run_suite(tmp_path, strict=True, only="test_module_skip.py")
    assert rc == 2 and "1 error" in out, out
    assert re.search(r"skipped in CI \(LOTTERY_CI_STRICT=1\).*no_such_package_for_lottery", out), out


def test_a_local_run_still_skips_saying_why(tmp_path):
    rc, out = run_suite(tmp_path, strict=False)
    assert rc == 0, out
    got = counts(out)
    assert got == {"passed": 1, "skipped": 3, "xfailed": 1}, (got, out)
    for reason in ("/usr/bin/chromium not found", "nginx is not installed", "no_such_package_for_lottery"):
        assert re.search(rf"SKIPPED.*{re.escape(reason)}", out), (reason, out)
    assert "LOTTERY_CI_STRICT" not in out


def fake_bin(tmp_path: Path, apt_works: bool) -> Path:
    """A PATH holding only bash, dirname, touch, chmod, a fake apt-get (that fails, or "installs" chromium and
    nginx as stubs) and a fake make that records the environment `make test` would run with."""
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    for tool in ("bash", "dirname", "touch", "chmod"):
        (bin_ / tool).symlink_to(subprocess.run(["bash", "-c", f"command -v {tool}"], capture_output=True,
                                                text=True, check=True).stdout.strip())
    install = (f'for p in "$@"; do case $p in chromium) touch {bin_}/chromium;; nginx*) touch {bin_}/nginx;; '
               f'esac; done; chmod +x {bin_}/chromium {bin_}/nginx 2>/dev/null; exit 0') if apt_works else \
        'echo "E: Unable to locate package $4" >&2; exit 100'
    (bin_ / "apt-get").write_text(f'#!{bin_}/bash\n[ "$1" = update ] && exit 0\n{install}\n')
    (bin_ / "make").write_text(f'#!{bin_}/bash\necho "make $* strict=$LOTTERY_CI_STRICT data=$LOTTERY_DATA" '
                               f'> {tmp_path}/make.log\n')
    for f in ("apt-get", "make"):
        (bin_ / f).chmod(0o755)
    return bin_


def run_ci_script(tmp_path: Path, apt_works: bool) -> subprocess.CompletedProcess:
    bin_ = fake_bin(tmp_path, apt_works)
    return subprocess.run([str(bin_ / "bash"), str(ROOT / ".ci" / "run")], env={"PATH": str(bin_)},
                          capture_output=True, text=True, timeout=60)


def test_ci_script_stops_naming_the_package_when_apt_fails(tmp_path):
    r = run_ci_script(tmp_path, apt_works=False)
    assert r.returncode == 1, (r.stdout, r.stderr)
    assert "E: Unable to locate package chromium" in r.stderr          # apt's own words are shown
    assert "could not install chromium" in r.stderr
    assert not (tmp_path / "make.log").exists()                         # the tests never ran


def test_ci_script_runs_make_test_in_strict_mode(tmp_path):
    r = run_ci_script(tmp_path, apt_works=True)
    assert r.returncode == 0, (r.stdout, r.stderr)
    assert (tmp_path / "make.log").read_text().strip() == \
        f"make test strict=1 data={ROOT.parent / 'shared' / 'data'}"
