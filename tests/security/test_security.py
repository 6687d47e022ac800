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
    assert row["pass"], "%s on %s:\n  expected: %s\n  observed: %s" % (
        row["attack"],
        row["runtime"],
        row["expected"],
        row["observed"],
    )


@pytest.mark.security
def test_report_is_consistent(report):
    assert not isinstance(report, str), report
    failing = [r for r in report["rows"] if not r["pass"]]
    assert report["failures"] == len(failing)


def test_ci_requires_both_runtimes():
    assert selftest_command({"CI": "true"})[-2:] == ["--runtime", "both"]
    assert "--runtime" not in selftest_command({})
