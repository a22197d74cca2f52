"""Tags and notes on runs, on SQLite and on a real PostgreSQL: set at submission, edited, filtered by, shown in the
frames, refused with a clear message when malformed (changing nothing), and through the `moduletune` CLI."""

from __future__ import annotations

import threading

import pytest

from moduletune.tasks import submission
from moduletune.tasks.entities import RUN_COLUMNS
from moduletune.tasks.registry import Registry, RunNotFound
from moduletune.tasks.rows import FRAME_COLUMNS
from moduletune.tasks.tags import MAX_TAGS, TagError, check_note, check_tags, parse_tags
from moduletune.tuning.config import RunConfig

from .conftest import TINY, cli, cli_json

CONFIG = RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=16, max_eval=16, device="cpu")


@pytest.fixture(params=["sqlite", "postgres"])
def registry(request, env, monkeypatch):
    """A Registry on SQLite in MODULETUNE_HOME, or on a throwaway PostgreSQL database; SQLite queue."""
    if request.param == "postgres":
        monkeypatch.setenv("MODULETUNE_DB_URL", request.getfixturevalue("pg_url"))
    return Registry()


def test_tags_and_a_note_given_at_submission_are_in_every_read(registry):
    run_id = submission.submit(registry, CONFIG, tags=["Baseline", "ln:last", "baseline"], note="  first try \n")
    other = submission.submit(registry, CONFIG.replace(seed=1))
    run = registry.get(run_id)
    assert (run.tags, run.note) == (["baseline", "ln:last"], "first try")
    assert (
        RUN_COLUMNS[-2:] == ["tags", "notes"]
        and list(run.to_dict())[len(RUN_COLUMNS) - 2 : len(RUN_COLUMNS)] == RUN_COLUMNS[-2:]
    )
    assert [r.to_dict() for r in registry.list_runs()] == [
        {k: registry.get(i).to_dict()[k] for k in RUN_COLUMNS} for i in (other, run_id)
    ]  # newest first, tags and note included
    frame = registry.runs_frame()
    assert list(frame.columns) == FRAME_COLUMNS and FRAME_COLUMNS[-5:] == [
        "settings",
        "settings_key",
        "comparison_key",
        "tags",
        "notes",
    ]
    assert frame["tags"].tolist() == [[], ["baseline", "ln:last"]]
    assert frame["notes"].isna().tolist() == [True, False] and frame["notes"].iloc[1] == "first try"


def test_tag_untag_set_tags_and_set_note(registry):
    run_id = registry.insert_queued(CONFIG)
    assert registry.tag(run_id, "lr-sweep") == ["lr-sweep"]
    assert registry.tag(run_id, ["B", "lr-sweep", "a.1"]) == ["a.1", "b", "lr-sweep"]
    assert registry.untag(run_id, ["b", "never-had"]) == ["a.1", "lr-sweep"]
    assert registry.set_tags(run_id, ["x", "y"]) == ["x", "y"]
    assert registry.set_note(run_id, "diverged after epoch 2\n\tlr too high") == "diverged after epoch 2\n\tlr too high"
    assert registry.annotate(run_id, add=["z"], remove=["x"]) == {
        "id": run_id,
        "tags": ["y", "z"],
        "notes": "diverged after epoch 2\n\tlr too high",
    }  # note=None leaves the note
    assert registry.set_note(run_id, None) is None and registry.get(run_id).note is None
    assert registry.set_tags(run_id, []) == [] and registry.get(run_id).tags == []
    with pytest.raises(RunNotFound, match="no run with id 999"):
        registry.tag(999, "x")


def test_filter_by_tag_in_list_runs_and_runs_frame(registry):
    a, b, c = (
        registry.insert_queued(CONFIG.replace(seed=s), tags=t) for s, t in ((0, ["q1", "ln"]), (1, ["q1"]), (2, []))
    )
    assert [r.id for r in registry.list_runs(tag="q1")] == [b, a]
    assert [r.id for r in registry.list_runs(tag=["q1", "LN"])] == [a]  # every tag given, as stored (lower-case)
    assert registry.list_runs(tag="nobody") == []
    assert registry.runs_frame(tag="ln")["id"].tolist() == [a]
    assert list(registry.runs_frame(tag="nobody").columns) == FRAME_COLUMNS
    assert [r.id for r in registry.list_runs(tag="q1", limit=1)] == [b]
    assert registry.list_runs(limit=1)[0].id == c
    with pytest.raises(TagError, match="has ' '"):
        registry.list_runs(tag="two words")


@pytest.mark.parametrize(
    "tags, message",
    [
        (["ok", "two words"], r"tag 'two words' has ' '; a tag is made of letters, digits and - _ \. :"),
        (["a/b"], r"tag 'a/b' has '/'"),
        (["é"], r"tag 'é' has 'é'"),
        (["  "], "an empty tag"),
        (["x" * 41], "has 41 characters; a tag has at most 40"),
        ([f"t{i}" for i in range(21)], "21 tags given; a run has at most 20"),
        ([7], "a tag is text"),
    ],
)
def test_bad_tags_are_refused_and_change_nothing(registry, tags, message):
    run_id = registry.insert_queued(CONFIG, tags=["keep"], note="kept")
    with pytest.raises(TagError, match=message):
        registry.tag(run_id, tags)
    with pytest.raises(TagError, match=message):
        submission.submit(registry, CONFIG, tags=tags)
    assert registry.count() == 1
    assert (registry.get(run_id).tags, registry.get(run_id).note) == (["keep"], "kept")


def test_bad_notes_are_refused_and_change_nothing(registry):
    run_id = registry.insert_queued(CONFIG, tags=["keep"], note="kept")
    for note, message in (
        ("n" * 2001, "a note has at most 2,000 characters; this one has 2,001"),
        ("a\x00b", "control"),
    ):
        with pytest.raises(TagError, match=message):
            registry.annotate(run_id, add=["new"], note=note)  # the tag is not added either
        with pytest.raises(TagError, match=message):
            submission.submit_many(registry, [CONFIG, CONFIG.replace(seed=1)], note=note)
    assert registry.count() == 1
    assert (registry.get(run_id).tags, registry.get(run_id).note) == (["keep"], "kept")
    assert registry.set_note(run_id, "n" * 2000) == "n" * 2000


def test_a_run_holds_at_most_20_tags_even_when_edited_at_once(registry):
    run_id = registry.insert_queued(CONFIG, tags=[f"t{i}" for i in range(MAX_TAGS - 2)])
    with pytest.raises(TagError, match=r"run \d+ would have 21 tags; a run has at most 20 \(it has 18\)"):
        registry.tag(run_id, ["a", "b", "c"])
    errors, barrier = [], threading.Barrier(6)

    def add(i):
        barrier.wait()
        try:
            registry.tag(run_id, [f"x{i}"])
        except TagError as err:
            errors.append(err)

    threads = [threading.Thread(target=add, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(registry.get(run_id).tags) == MAX_TAGS and len(errors) == 4


def test_retry_keeps_the_tags_and_a_searchs_runs_inherit_them(registry):
    run_id = submission.submit(registry, CONFIG, tags=["exp-7"], note="flaky")
    registry.request_cancel(run_id)
    again = submission.retry(registry, run_id)
    assert (registry.get(again).tags, registry.get(again).note) == (["exp-7"], None)
    # A search is scored on at least 100 held-out rows (tuning.verdict): half of 200 training examples.
    searchable = CONFIG.replace(lr_search=True, max_train=200, holdout_fraction=0.5)
    search = submission.submit(registry, searchable, tags=["search-me"])
    token = registry.claim(search, "w", "cpu")
    from moduletune.tuning.search import candidate_config

    candidates = [(candidate_config(CONFIG, 1e-2), {"lr": 1e-2, "score": 0.6, "steps": 4, "rungs": []})]
    finals = [CONFIG.replace(lr=1e-2, seed=s) for s in (0, 1)]
    outcome = {"chosen_lr": 1e-2, "primary_metric_name": "accuracy", "primary_metric": 0.6}
    ids = registry.complete_search(search, token, outcome, candidates, finals)
    assert [r.tags for r in registry.children(search)] == [["search-me"]] * 3
    assert sorted(r.id for r in registry.list_runs(tag="search-me", status="queued")) == ids


def test_tag_text_helpers():
    assert parse_tags(" a, B  c:1,,") == ["a", "b", "c:1"] and parse_tags("") == [] and parse_tags(None) == []
    assert check_tags(None) == [] and check_tags("One") == ["one"]
    assert check_note("   ") is None and check_note(None) is None and check_note(" x ") == "x"


# ---------------------------------------------------------------------------------------------- the CLI


def test_the_cli_tags_notes_and_filters(env):
    run_id = cli_json("submit", *TINY, "--tag", "cli", "--tag", "First", "--note", "from the shell")["id"]
    sweep = cli_json("sweep", *TINY, "--seeds", "0,1", "--tag", "sweep-a")
    run = cli_json("show", str(run_id))
    assert (run["tags"], run["notes"]) == (["cli", "first"], "from the shell")
    assert cli_json("tag", str(run_id), "extra", "--note", "edited") == {
        "id": run_id,
        "tags": ["cli", "extra", "first"],
        "notes": "edited",
    }
    assert cli_json("tag", str(run_id), "first", "--remove")["tags"] == ["cli", "extra"]
    assert cli_json("tag", str(run_id), "--note", "")["notes"] is None
    assert [r["id"] for r in cli_json("runs", "--tag", "sweep-a")] == sweep["ids"][::-1]
    assert [r["id"] for r in cli_json("runs", "--tag", "cli", "--tag", "extra")] == [run_id]
    table = cli("runs", "--tag", "cli").stdout.splitlines()
    assert table[0].split()[-1] == "TAGS" and table[1].split()[-1] == "cli,extra"
    assert "tags                cli, extra" in cli("show", str(run_id)).stdout
    assert cli("tag", str(run_id), "bob").stdout.strip() == f"run {run_id}: tags bob, cli, extra; note (none)"


@pytest.mark.parametrize(
    "args, message",
    [
        (["tag", "1", "two words"], "tag 'two words' has ' '; a tag is made of letters, digits and - _ . :"),
        (["tag", "1"], "name a tag or more, or --note TEXT"),
        (["tag", "99", "x"], "no run with id 99"),
        (["tag", "1", "--note", "n" * 2001], "a note has at most 2,000 characters"),
        (["submit", *TINY, "--tag", "a" * 41], "a tag has at most 40"),
        (["runs", "--tag", "no way"], "tag 'no way' has ' '"),
    ],
)
def test_the_cli_refuses_bad_tags_and_notes_clearly(env, args, message):
    cli("submit", *TINY, "--tag", "kept", "--note", "kept")
    proc = cli(*args, check=False)
    assert proc.returncode == 2 and message in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr
    run = cli_json("show", "1")
    assert (run["tags"], run["notes"]) == (["kept"], "kept") and len(cli_json("runs")) == 1
