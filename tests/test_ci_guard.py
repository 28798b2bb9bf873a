"""In CI (CI=true) the PostgreSQL shared-study test fails when its database is missing."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.conftest import REPO

PG_TEST = "tests/test_sweep_runner.py::test_shared_postgres_study_from_two_processes"


def _run_pg_test(**env: str) -> subprocess.CompletedProcess:
    full = {k: v for k, v in os.environ.items() if k not in ("CI", "WBCLF_TEST_POSTGRES_URL")}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
                           "-rs", PG_TEST], capture_output=True, text=True, env=full, cwd=REPO,
                          timeout=300)


def test_postgres_test_fails_in_ci_without_a_database():
    result = _run_pg_test(CI="true")
    assert result.returncode == 1, result.stdout
    assert "1 error in" in result.stdout and " skipped in" not in result.stdout
    assert "CI must provide WBCLF_TEST_POSTGRES_URL" in result.stdout


def test_postgres_test_skips_outside_ci_without_a_database():
    result = _run_pg_test()
    assert result.returncode == 0, result.stdout
    assert "1 skipped" in result.stdout
