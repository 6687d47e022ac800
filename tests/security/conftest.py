"""pytest front end of `rlm-sandbox selftest --json`: the cases are the rows
of the Rust attack catalogue (src/selftest/), not a second list.

The binary is target/release/rlm-sandbox of this repository, or
$RLM_SANDBOX_BIN. It runs once per session (at collection, since the rows
are the parameters); a missing binary or an unreadable report is a failing
case, never a skip. With CI=true it runs `--runtime both`, so a missing
runsc or runc fails (as every other suite does) instead of leaving that
runtime's rows out; elsewhere it runs on the runtimes installed.
"""

import functools
import json
import os
import pathlib
import subprocess

REPO = pathlib.Path(__file__).resolve().parents[2]


def pytest_configure(config):
    config.addinivalue_line(
        "markers", "security: one row of the threat model, from rlm-sandbox selftest --json"
    )


def binary():
    return os.environ.get("RLM_SANDBOX_BIN") or str(REPO / "target" / "release" / "rlm-sandbox")


def selftest_command(environ=os.environ):
    """The selftest command line: both runtimes required under CI=true."""
    cmd = [binary(), "selftest", "--json"]
    if environ.get("CI") == "true":
        cmd += ["--runtime", "both"]
    return cmd


@functools.lru_cache(maxsize=None)
def selftest_report():
    """The parsed report, or an error string saying why there is none."""
    cmd = selftest_command()
    try:
        # The catalogue takes about 15 s per runtime; the limit only stops
        # a hung runtime from hanging the session.
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "cannot run %s: %s (cargo build --release first)" % (" ".join(cmd), e)
    try:
        report = json.loads(proc.stdout)
    except ValueError:
        return "%s exited %d without a JSON report; stderr: %s" % (
            " ".join(cmd),
            proc.returncode,
            proc.stderr[-2000:],
        )
    if not report.get("rows"):
        return "%s reported no rows: %r" % (" ".join(cmd), report)
    return report


def pytest_generate_tests(metafunc):
    if "row" not in metafunc.fixturenames:
        return
    report = selftest_report()
    if isinstance(report, str):
        # One case that fails with the reason: nothing is silently skipped.
        metafunc.parametrize("row", [{"error": report}], ids=["selftest"])
        return
    rows = report["rows"]
    metafunc.parametrize("row", rows, ids=["%s[%s]" % (r["attack"], r["runtime"]) for r in rows])
