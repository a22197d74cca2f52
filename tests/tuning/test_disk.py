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


@pytest.fixture
def full_disk(tmp_path):
    """A 64 KiB tmpfs with no byte left (mounting one needs root: elsewhere the test is skipped, saying so)."""
    mount = tmp_path / "full"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True)
    if made.returncode:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {made.stderr.decode().strip()}")
    try:
        with open(mount / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 4096)
                f.flush()
    except OSError as err:
        assert err.errno == errno.ENOSPC
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
