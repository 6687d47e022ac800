"""The threat model's attacks on real runtimes: one case per row of
`rlm-sandbox selftest --json` (see conftest.py), marked `security`.

    pytest tests/security/ -v -m security
"""

import pytest

from conftest import selftest_command, selftest_report


@pytest.fixture(scope="module")
def report():
    return selftest_report()


@pytest.mark.security
def test_attack_is_contained(row):
    assert "error" not in row, row.get("error")
    if row["outcome"] == "n/a":
        # Nothing to prove on this host (the row's check verified why on
        # the host): reported as skipped, never as passed.
        pytest.skip("N/A, not a pass: %s on %s: %s" % (
            row["attack"], row["runtime"], row["observed"]))
    assert row["outcome"] == "pass" and row["pass"], "%s on %s:\n  expected: %s\n  observed: %s" % (
        row["attack"],
        row["runtime"],
        row["expected"],
        row["observed"],
    )


@pytest.mark.security
def test_report_is_consistent(report):
    assert not isinstance(report, str), report
    by_outcome = {o: [r for r in report["rows"] if r["outcome"] == o] for o in ("pass", "fail", "n/a")}
    assert report["failures"] == len(by_outcome["fail"])
    assert report["passed"] == len(by_outcome["pass"])
    assert report["not_applicable"] == len(by_outcome["n/a"])
    assert sum(map(len, by_outcome.values())) == len(report["rows"])
    assert all(r["pass"] == (r["outcome"] == "pass") for r in report["rows"])


def test_ci_requires_both_runtimes():
    assert selftest_command({"CI": "true"})[-2:] == ["--runtime", "both"]
    assert "--runtime" not in selftest_command({})
