"""Test setup: no network, no prompts, everything under a per-session temp folder."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

# Before anything imports wandb, timm or albumentations.
os.environ["WANDB_MODE"] = "offline"
os.environ["WANDB_SILENT"] = "true"
os.environ["WANDB_CONSOLE"] = "off"
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["NO_ALBUMENTATIONS_UPDATE"] = "1"
os.environ.setdefault("KMP_WARNINGS", "0")
os.environ.pop("WANDB_API_KEY", None)

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session", autouse=True)
def _isolated_dirs(tmp_path_factory):
    """Datasets, caches and wandb files go to a session temp dir, never the user's home."""
    base = tmp_path_factory.mktemp("wbclf-home")
    old = {k: os.environ.get(k) for k in ("WBCLF_DATA_DIR", "WBCLF_CACHE_DIR", "WANDB_DIR",
                                           "WANDB_CONFIG_DIR", "WANDB_CACHE_DIR",
                                           "WANDB_DATA_DIR", "WANDB_ARTIFACT_DIR")}
    os.environ["WBCLF_DATA_DIR"] = str(base / "datasets")
    os.environ["WBCLF_CACHE_DIR"] = str(base / "cache")
    os.environ["WANDB_DIR"] = str(base / "wandb")
    os.environ["WANDB_CONFIG_DIR"] = str(base / "wandb-config")
    os.environ["WANDB_CACHE_DIR"] = str(base / "wandb-cache")
    os.environ["WANDB_DATA_DIR"] = str(base / "wandb-data")  # table images are staged here
    os.environ["WANDB_ARTIFACT_DIR"] = str(base / "wandb-artifacts")
    yield base
    for key, value in old.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(autouse=True)
def _fresh_model_builds():
    """Each test builds its pretrained models afresh: a kept build (wbclf.models.prebuilt)
    must not stand in for one a test has changed the weights of (a tampered file)."""
    from wbclf.models import prebuilt

    prebuilt.forget()
    yield
    prebuilt.forget()


@pytest.fixture(scope="session")
def toy_lesions(_isolated_dirs) -> Path:
    """A small toy-lesions dataset shared by the session's tests."""
    from wbclf.data.synthetic import synthesize

    return synthesize("toy-lesions", _isolated_dirs / "toy-lesions-small", n=60, size=64, seed=0)


@pytest.fixture(scope="session")
def toy_leaves(_isolated_dirs) -> Path:
    """A small toy-leaves dataset shared by the session's tests."""
    from wbclf.data.synthetic import synthesize

    return synthesize("toy-leaves", _isolated_dirs / "toy-leaves-small", n=24, size=64, seed=0)


def run_cli(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    """Run ``python -m wbclf.cli ARGS`` in a real subprocess; returns CompletedProcess."""
    import subprocess

    full_env = {**os.environ, **(env or {})}
    return subprocess.run([sys.executable, "-m", "wbclf.cli", *args], capture_output=True,
                          text=True, env=full_env, cwd=cwd or REPO, timeout=timeout)


@pytest.fixture
def cache_dir(tmp_path, monkeypatch) -> Path:
    """A fresh cache for this test: image and feature stores built here are its own."""
    path = tmp_path / "cache"
    monkeypatch.setenv("WBCLF_CACHE_DIR", str(path))
    return path


@pytest.fixture
def postgres_url() -> str:
    """URL of the PostgreSQL server that `.ci/run` starts; skipped without one, except in CI."""
    url = os.environ.get("WBCLF_TEST_POSTGRES_URL", "")
    if not url:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI must provide WBCLF_TEST_POSTGRES_URL (.ci/postgres.sh)")
        pytest.skip("no PostgreSQL server (set WBCLF_TEST_POSTGRES_URL)")
    return url
