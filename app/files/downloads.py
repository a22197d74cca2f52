"""Files the UI offers for download: one temporary folder per process, and a run's artifact zipped on request.

A run's zip is built only when someone asks for it and once per run and artifact (the key is the run id and the
artifact files' names, sizes and modification times; a finished run's artifact does not change). It is written under
a temporary name no other request shares and renamed into place in one step, one build at a time per file, so two
requests at once both get the same complete file and a refresh of the Runs tab builds nothing.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
import zipfile
from pathlib import Path

from moduletune.tasks.entities import Run

_LOCK = threading.Lock()  # guards the folder, the per-file build locks and the build count
_FOLDER: Path | None = None
_BUILDING: dict[str, threading.Lock] = {}
_BUILDS = 0
STORED = (".safetensors", ".bin", ".pt", ".pth", ".npy")  # tensors barely compress: stored, for speed


def downloads_dir() -> Path:
    """This process's temporary folder for downloads (under the temp dir, which Gradio serves), named by its pid."""
    global _FOLDER
    with _LOCK:
        if _FOLDER is None or not _FOLDER.is_dir():
            _FOLDER = Path(tempfile.mkdtemp(prefix=f"moduletune-downloads-{os.getpid()}-"))
        return _FOLDER


def build_count() -> int:
    """How many run archives this process has built (a refresh must not change it)."""
    with _LOCK:
        return _BUILDS


def artifact_identity(folder: Path) -> str:
    """A short digest of an artifact folder's files (relative names, sizes, modification times)."""
    digest = hashlib.sha1()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        stat = path.stat()
        digest.update(f"{path.relative_to(folder).as_posix()}\0{stat.st_size}\0{stat.st_mtime_ns}\n".encode())
    return digest.hexdigest()[:12]


def artifact_download(run: Run | None) -> str | None:
    """The zip of a run's artifact (trained tensors + config + result), built on the first request; None if it has
    none. Later requests for the same run and artifact get the same file; concurrent ones wait for the one build."""
    if not run or not run.artifact_dir:
        return None
    src = Path(run.artifact_dir)
    if not src.is_dir():
        return None
    run_id = int(run.id)
    target = downloads_dir() / "runs" / f"{run_id}-{artifact_identity(src)}" / f"moduletune-run-{run_id}.zip"
    with _build_lock(target):
        if not target.is_file():
            _build(src, target)
    return str(target)


def _build_lock(target: Path) -> threading.Lock:
    with _LOCK:
        return _BUILDING.setdefault(str(target), threading.Lock())


def _build(src: Path, target: Path) -> None:
    """Zip src into target through a temporary file of this build's own, renamed into place when complete."""
    global _BUILDS
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, part = tempfile.mkstemp(dir=target.parent, prefix=f".{target.stem}.", suffix=".part")
    os.close(fd)
    try:
        with zipfile.ZipFile(part, "w", zipfile.ZIP_DEFLATED) as archive:
            for path in sorted(p for p in src.rglob("*") if p.is_file()):
                kind = zipfile.ZIP_STORED if path.suffix in STORED else zipfile.ZIP_DEFLATED
                archive.write(path, path.relative_to(src).as_posix(), compress_type=kind)
        os.replace(part, target)  # atomic: a reader sees no file or the whole file
    except BaseException:
        Path(part).unlink(missing_ok=True)
        raise
    with _LOCK:
        _BUILDS += 1
