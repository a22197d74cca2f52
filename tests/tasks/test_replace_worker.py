"""A worker process whose run spoiled its GPU state leaves and is replaced; ordinary failures keep it.

A CUDA error cannot be produced without a GPU, so the GPU half is checked by error type here; the
way out (Huey's WorkerRecycle, after which its health check starts a fresh worker) runs for real.
"""

import threading

import pytest
import torch
from huey import SqliteHuey
from huey.consumer import WorkerRecycle

from moduletune.tasks import jobs
from moduletune.tasks.worker import ReplaceableWorker
from moduletune.tuning.graphs import GraphCaptureError


def test_which_errors_spoil_the_process():
    assert jobs.spoils_process(GraphCaptureError("CUDA graph capture failed for bert"))
    assert jobs.spoils_process(torch.AcceleratorError("CUDA error: an illegal memory access was encountered"))
    assert not jobs.spoils_process(torch.OutOfMemoryError("CUDA out of memory"))
    assert not jobs.spoils_process(ValueError("malformed layer spec"))


def test_a_spoiled_worker_leaves_through_hueys_recycle(tmp_path, monkeypatch):
    huey = SqliteHuey(filename=str(tmp_path / "queue.db"))
    worker = ReplaceableWorker(huey, threading.Event(), default_delay=0.01, max_delay=0.01, backoff=1.0)
    worker.loop()  # an empty queue, a healthy process: the loop goes on
    monkeypatch.setattr(jobs.CONTEXT, "replace_me", True)
    with pytest.raises(WorkerRecycle):
        worker.loop()
