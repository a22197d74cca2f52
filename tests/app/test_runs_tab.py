"""The Runs tab's logic without Gradio, on a real registry (SQLite in the test's MODULETUNE_HOME): which run the
panel shows and when an answer is stale, the link's run, the table's new columns, filters and search, the
trainable share of runs not started yet, the action message, and the artifact download built on request."""

from __future__ import annotations

import copy
import os
import threading
import time
import zipfile
from dataclasses import replace
from pathlib import Path

import pandas as pd
import pytest

from moduletune.app.figures import tables
from moduletune.app.files import downloads
from moduletune.app.runs import listing as run_list
from moduletune.app.runs import state as runs_state
from moduletune.app.runs import views
from moduletune.app.runs.state import RunsTabState
from moduletune.tasks import submission
from moduletune.tasks.entities import Run
from moduletune.tuning.config import RunConfig
from tests.app.test_views import record

LN5 = dict(task="rte", modules=("layernorm",), layers="5")
NOW = pd.Timestamp("2026-03-01 12:00", tz="UTC")


def claimed(registry, config: RunConfig) -> tuple[int, int]:
    """A run a worker has claimed (running): its id and claim token."""
    run_id = submission.submit(registry, config, submitter="test")
    return run_id, registry.claim(run_id, "test-worker", "cpu")


# ---------------------------------------------------------------------------------------------- the pick


def test_a_pick_outlives_refreshes_and_a_stale_answer_changes_nothing():
    state = RunsTabState()
    before = state.version
    first = state.pick(7)  # the tab opened on #7 (say, a link), then the person picked #2 at once
    second = state.pick(2)
    assert state.picked == 2 and before < first < second and not state.current(first) and state.current(second)
    # The refresh that started under the first pick finishes late: it sends nothing and records nothing.
    assert state.answer(first, 7, (7, "running", 3), (("#7", 7), ("#2", 2))) is None
    assert state.shown is None and state.key == ()
    sent = state.answer(second, 2, (2, "succeeded", 4), (("#7", 7), ("#2", 2)))
    assert sent.details and sent.dropdown and state.shown == 2
    # Three refresh cycles while another run trains: #2 stays picked and nothing of it is redrawn.
    for cycle in range(3):
        choices = (("#7 running", 7), ("#2", 2), ("#9 queued", 9))  # a new run: the choices are sent once
        again = state.answer(state.version, state.picked, (2, "succeeded", 4), choices)
        assert state.picked == 2 and state.shown == 2 and not again.details and again.dropdown == (cycle == 0)
    assert state.pick(None) and state.picked is None  # back to following the running run


def test_each_session_gets_its_own_state():
    # gr.State deep-copies its value once per session; the copies must not share a pick.
    template = RunsTabState()
    a, b = copy.deepcopy(template), copy.deepcopy(template)
    a.pick(3)
    assert b.picked is None and template.picked is None and a.version != b.version


def test_a_prepared_download_is_offered_for_its_own_run_only():
    state = RunsTabState()
    v = state.pick(4)
    state.answer(v, 4, (4, "succeeded"), ())
    assert state.prepared(4, "/tmp/x.zip")
    sent = state.answer(v, 4, (4, "succeeded"), ())
    assert sent.download and sent.ready == 4 and not sent.details
    assert not state.answer(v, 4, (4, "succeeded"), ()).download  # already on screen
    v = state.pick(5)
    moved = state.answer(v, 5, (5, "running"), ())
    assert moved.download and moved.ready is None  # another run: the button is hidden again
    assert not state.prepared(4, "/tmp/x.zip")  # an archive finished after the person moved on: not offered


def test_the_default_run_is_the_running_one_else_the_last_finished(registry):
    assert run_list.default_run(registry) is None
    queued_first = submission.submit(registry, RunConfig(**LN5), submitter="test")
    assert run_list.default_run(registry) == queued_first  # nothing ran yet: the newest run
    done = record(registry, RunConfig(**LN5, seed=1))
    running, token = claimed(registry, RunConfig(**LN5, seed=2))
    newest_queued = submission.submit(registry, RunConfig(**LN5, seed=3), submitter="test")
    assert run_list.default_run(registry) == running  # not the newest run (queued, waiting for a worker)
    registry.mark_cancelled(running, token)
    assert run_list.default_run(registry) == running  # it finished last
    time.sleep(1.1)  # the registry lists finish times to the second
    registry.request_cancel(queued_first)  # an older run, finished even later
    assert run_list.default_run(registry) == queued_first != newest_queued and done < running


def test_the_dropdown_can_show_a_run_older_than_its_choices(registry):
    ids = [submission.submit(registry, RunConfig(**LN5, seed=s), submitter="test") for s in range(3)]
    choices = views.run_choices(registry, limit=2, include=ids[0])
    assert [i for _, i in choices] == [ids[2], ids[1], ids[0]]
    assert [i for _, i in views.run_choices(registry, limit=2, include=10_000)] == [ids[2], ids[1]]


# ---------------------------------------------------------------------------------------------- links


@pytest.mark.parametrize(
    "params, expected",
    [
        ({"run": "12"}, (12, "")),
        ({"run": "#12"}, (12, "")),
        ({"tab": "runs"}, (None, "")),
        ({"run": ""}, (None, "")),
        (None, (None, "")),
    ],
)
def test_a_links_run(params, expected):
    assert runs_state.run_of_link(params) == expected


@pytest.mark.parametrize("bad", ["abc", "0", "-3", "1.5"])
def test_a_links_bad_run_is_named(bad):
    run_id, problem = runs_state.run_of_link({"run": bad})
    assert run_id is None and repr(bad) in problem and "?tab=runs&run=12" in problem


# ---------------------------------------------------------------------------------------------- the table


def test_duration_and_sweep_columns():
    runs = pd.DataFrame(
        [
            dict(id=1, status="succeeded", modules="layernorm", sweep_id="paper-1a", parent_id=None,
                 queued_at=NOW - pd.Timedelta(hours=2), started_at=NOW - pd.Timedelta(minutes=90),
                 finished_at=NOW - pd.Timedelta(minutes=86, seconds=40)),
            dict(id=2, status="running", modules="query", kind="candidate", sweep_id=None, parent_id=9,
                 queued_at=NOW - pd.Timedelta(minutes=5), started_at=NOW - pd.Timedelta(seconds=45), finished_at=None),
            dict(id=3, status="queued", modules="value", sweep_id="s-2", parent_id=9,
                 queued_at=NOW - pd.Timedelta(seconds=5), started_at=None, finished_at=None),
        ]
    )  # fmt: skip
    table = tables.runs_table(runs, now=NOW).set_index("id")
    assert list(table.columns)[-2:] == ["age", "duration"]
    assert table.loc[1, "duration"] == "3m 20s" and table.loc[2, "duration"] == "45s" and table.loc[3, "duration"] == ""
    assert table.loc[1, "sweep"] == "paper-1a" and table.loc[2, "sweep"] == "search #9"
    assert table.loc[3, "sweep"] == "s-2 · search #9"


def test_search_words_all_match():
    runs = pd.DataFrame(
        [
            dict(id=12, status="running", task="rte", family="LN", modules="layernorm", layers="5", sweep_id="sw-a",
                 parent_id=None),
            dict(id=3, status="succeeded", task="mrpc", family="Q", modules="query", layers="0-3", sweep_id=None,
                 parent_id=12),
            dict(id=120, status="queued", task="sst2", family="V", modules="value", layers="11", sweep_id="sw-b",
                 parent_id=None),
        ]
    )  # fmt: skip

    def found(text):
        return runs.loc[tables.matching(runs, text), "id"].tolist()

    assert found("") == [12, 3, 120] and found("   ") == [12, 3, 120]
    assert found("#12") == [12, 3]  # the run and the search's child, not #120
    assert found("12") == [12, 3]  # a number: an id, or part of a text field (none has 12)
    assert found("11") == [120]  # the layer
    assert found("LN") == [12] and found("layernorm") == [12] and found("RTE running") == [12]
    assert found("sw-") == [12, 120] and found("sw- queued") == [120] and found("succeeded 0-3") == [3]
    assert found("nothing-like-this") == []


def test_filters_search_and_the_trainable_share_of_queued_runs(registry):
    done = record(registry, RunConfig(**LN5))
    first = submission.submit(registry, RunConfig(**LN5, seed=1), submitter="test", sweep_id="sweep-a")
    second = submission.submit(
        registry, RunConfig(task="mrpc", modules=("query",), layers="0-1"), submitter="test", sweep_id="sweep-b"
    )
    assert run_list.sweep_choices(registry) == ["sweep-b", "sweep-a"]
    table = views.runs_table(registry).set_index("id")
    # LN of layer 5 of MiniLM: 2 LayerNorms x (384 weights + 384 biases) + the head (384 x 2 + 2) of 22,713,986.
    assert table.loc[first, "trainable %"] == f"{100 * (1536 + 770) / 22_713_986:.3g}%"
    assert table.loc[first, "lr"] == "0.01" and table.loc[second, "lr"] == "0.0003"  # the family defaults
    assert table.loc[first, "sweep"] == "sweep-a" and table.loc[done, "trainable %"] == "0.01%"  # as recorded
    # Q of layers 0-1: 2 x (384 x 384 + 384) + the head.
    assert table.loc[second, "trainable %"] == f"{100 * (2 * (384 * 384 + 384) + 770) / 22_713_986:.3g}%"
    assert views.runs_table(registry, sweep="sweep-a")["id"].tolist() == [first]
    assert views.runs_table(registry, sweep="all", search="mrpc")["id"].tolist() == [second]
    assert views.runs_table(registry, status="queued", search="sweep")["id"].tolist() == [second, first]
    assert views.runs_table(registry, search=f"#{done}")["id"].tolist() == [done]
    assert views.runs_table(registry, search="queued", limit=1)["id"].tolist() == [second]


def test_a_selection_that_cannot_be_counted_leaves_a_blank_once(registry, tmp_path):
    assert pd.isna(run_list.trainable_pct(str(tmp_path / "no-such-model"), "rte", "layernorm", "5"))
    assert pd.isna(run_list.trainable_pct("all-MiniLM-L6-v2", "rte", "layernorm", "9"))  # it has layers 0-5


# ---------------------------------------------------------------------------------------------- actions


def test_the_cancel_message_follows_the_run(registry):
    queued = submission.submit(registry, RunConfig(**LN5), submitter="test")
    registry.request_cancel(queued)
    assert runs_state.action_message(registry, ("cancel", queued)) == f"Run #{queued}: cancelled."
    running, token = claimed(registry, RunConfig(**LN5, seed=1))
    assert registry.request_cancel(running) == "cancelling"
    assert runs_state.action_message(registry, ("cancel", running)) == (
        f"Run #{running}: cancelling (it stops at its next step)."
    )
    registry.mark_cancelled(running, token)  # the worker stopped it at its next step
    assert runs_state.action_message(registry, ("cancel", running)) == f"Run #{running}: cancelled."
    new_id = submission.retry(registry, running, submitter="test")
    assert runs_state.action_message(registry, ("retry", running, new_id)) == (
        f"✅ Run #{running} queued again as run **#{new_id}** (now queued)."
    )
    assert runs_state.action_message(registry, ()) == ""
    assert "no run with id" in runs_state.action_message(registry, ("cancel", 10_000))


# ---------------------------------------------------------------------------------------------- downloads


@pytest.fixture
def artifact(tmp_path):
    """A run's artifact folder as a worker leaves it: trained tensors (a real safetensors file, 24 MB) and JSON."""
    import torch
    from safetensors.torch import save_file

    folder = tmp_path / "artifact"
    folder.mkdir()
    save_file({"weight": torch.randn(6_000_000)}, str(folder / "trained.safetensors"))
    (folder / "run_config.json").write_text('{"task": "rte"}')
    (folder / "result.json").write_text('{"primary_metric": 0.6}')
    return Run(id=41, artifact_dir=str(folder), status="succeeded")


def crcs(path: str) -> dict:
    with zipfile.ZipFile(path) as z:
        assert z.testzip() is None  # every member reads back with its CRC
        return {i.filename: (i.CRC, i.file_size) for i in z.infolist()}


def test_simultaneous_requests_for_one_download_share_one_complete_build(artifact):
    before = downloads.build_count()
    barrier, paths, errors = threading.Barrier(4), [], []

    def ask():
        barrier.wait()
        try:
            paths.append(downloads.artifact_download(artifact))
        except Exception as err:  # the old fixed '.part' name: FileNotFoundError on the rename
            errors.append(err)

    threads = [threading.Thread(target=ask) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(set(paths)) == 1 and downloads.build_count() == before + 1
    path = Path(paths[0])
    assert path.name == "moduletune-run-41.zip" and str(path).startswith(str(downloads.downloads_dir()))
    contents = crcs(str(path))
    assert set(contents) == {"trained.safetensors", "run_config.json", "result.json"}
    assert contents["trained.safetensors"][1] == os.path.getsize(Path(artifact.artifact_dir) / "trained.safetensors")
    assert not list(path.parent.glob("*.part"))  # no temporary file left behind
    assert downloads.artifact_download(artifact) == str(path) and downloads.build_count() == before + 1  # cached


def test_a_changed_artifact_is_a_new_download(artifact):
    first = downloads.artifact_download(artifact)
    (Path(artifact.artifact_dir) / "result.json").write_text('{"primary_metric": 0.7, "again": true}')
    second = downloads.artifact_download(artifact)
    assert second != first and Path(first).is_file()  # a file being served is never overwritten
    with zipfile.ZipFile(second) as z:
        assert b"again" in z.read("result.json")


def test_no_artifact_no_download(artifact, tmp_path):
    assert downloads.artifact_download(None) is None
    assert downloads.artifact_download(replace(artifact, artifact_dir=None)) is None
    assert downloads.artifact_download(replace(artifact, artifact_dir=str(tmp_path / "gone"))) is None


def test_reading_the_runs_tab_builds_no_archive(registry, artifact):
    run_id = record(registry, RunConfig(**LN5))
    before = downloads.build_count()
    for _ in range(3):  # what a refresh reads: the table, the choices, the default run and its details
        views.runs_table(registry)
        views.run_choices(registry)
        views.run_detail(registry, run_list.default_run(registry))
    assert run_list.default_run(registry) == run_id and downloads.build_count() == before
