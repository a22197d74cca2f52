"""Shared fixtures: the real GLUE folder beside the checkout and an isolated MODULETUNE_HOME."""

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
GLUE_DIR = Path(os.environ.get("MODULETUNE_GLUE_DIR") or REPO.parent / "shared" / "glue")


@pytest.fixture(scope="session")
def glue_dir() -> Path:
    """The real GLUE files (../shared/glue unless MODULETUNE_GLUE_DIR says otherwise)."""
    if not (GLUE_DIR / "RTE" / "train.tsv").is_file():
        pytest.fail(f"GLUE data not found at {GLUE_DIR}; set MODULETUNE_GLUE_DIR to a GLUE folder")
    return GLUE_DIR


@pytest.fixture
def home(tmp_path, monkeypatch) -> Path:
    """A fresh MODULETUNE_HOME per test so runs, queues and caches never leak between tests."""
    monkeypatch.setenv("MODULETUNE_HOME", str(tmp_path / "home"))
    return tmp_path / "home"
