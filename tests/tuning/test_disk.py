"""A full disk, for real (a tiny tmpfs filled to the brim): every file a run writes names its path and says
"no space left on the device", and leaves no half-written file behind."""

from __future__ import annotations

import errno
import subprocess

import pytest

from moduletune.tuning import batches, glue
from moduletune.tuning.config import RunConfig
from moduletune.tuning.disk import FULL, DiskFullError, write_text
from moduletune.tuning.models import load_tokenizer
from moduletune.tuning.train import fine_tune


def tmpfs(mount, size: str):
    """A tiny tmpfs at mount (mounting one needs root: elsewhere the test is skipped, saying so)."""
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], capture_output=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    return mount


def fill(mount) -> None:
    """Leave no byte free on the file system at mount."""
    try:
        with open(mount / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as err:
        assert err.errno == errno.ENOSPC


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs with no byte left."""
    mount = tmpfs(tmp_path / "full", "64k")
    fill(mount)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def assert_named(err: DiskFullError, path) -> None:
    assert err.errno == errno.ENOSPC and str(path) in str(err) and FULL in str(err), str(err)


def test_a_write_on_a_full_disk_names_the_file_and_leaves_nothing(full_disk):
    target = full_disk / "notes" / "state.json"
    with pytest.raises(DiskFullError) as caught:
        write_text(target, "x" * 100_000, "the lr search's state")
    assert_named(caught.value, target)
    assert str(caught.value).startswith("cannot write the lr search's state ")
    assert sorted(p.name for p in target.parent.iterdir()) == []  # no temporary file left


def test_the_token_cache_on_a_full_disk_names_its_file(full_disk, glue_dir, monkeypatch):
    monkeypatch.setenv("MODULETUNE_HOME", str(full_disk / "home"))
    dev = glue.load_glue("rte", glue_dir)["validation"]
    with pytest.raises(DiskFullError, match="cannot write the token cache .*/cache/tokens/.*\\.pt: no space left"):
        batches.encode(load_tokenizer("all-MiniLM-L6-v2"), dev, ["sentence1", "sentence2"], 128)


def test_a_run_whose_checkpoint_or_artifact_meets_a_full_disk_names_the_file(full_disk, glue_dir, home):
    config = RunConfig(
        task="rte", modules=("layernorm",), layers="5", max_train=32, max_eval=32, glue_dir=str(glue_dir)
    )
    with pytest.raises(DiskFullError) as caught:
        fine_tune(config, checkpoint_dir=full_disk / "checkpoint")
    assert_named(caught.value, full_disk / "checkpoint" / "checkpoint.pt")
    with pytest.raises(DiskFullError) as caught:
        fine_tune(config, output_dir=full_disk / "artifact")
    assert_named(caught.value, full_disk / "artifact" / "trained.safetensors")


def test_a_run_whose_events_meet_a_full_registry_disk_names_the_registry(tmp_path, home):
    """Events go to the registry: on a full disk its file is named, not SQLite's "database or disk is full"."""
    from moduletune.tasks.registry import Registry

    mount = tmpfs(tmp_path / "db", "1m")
    try:
        registry = Registry(f"sqlite:///{mount / 'runs.db'}")
        run_id = registry.insert_queued(RunConfig(task="rte", modules=("layernorm",), max_train=32))
        token = registry.claim(run_id, "test-worker")
        fill(mount)
        rows = [{"step": s, "epoch": 0, "split": "train", "name": "loss", "value": 0.5} for s in range(200)]
        with pytest.raises(DiskFullError) as caught:
            for step in range(1, 1000):  # the WAL's free pages fill first
                registry.record_progress(run_id, token, rows, step, 1000)
        assert_named(caught.value, mount / "runs.db")
        assert str(caught.value).startswith("cannot write the registry ")
    finally:
        from moduletune.tasks.database import dispose_engines

        dispose_engines()
        subprocess.run(["umount", "-l", str(mount)], check=False)
