"""The UI's tag and note actions (app.public.actions) on a real SQLite registry: a box's text or a list, and in public
mode only on a visitor's own runs."""

from __future__ import annotations

import pytest

from moduletune.app.public import actions
from moduletune.app.public.checks import FormError
from moduletune.app.public.limits import LimitError, PublicLimits, set_public
from moduletune.tasks.tags import TagError
from moduletune.tuning.config import RunConfig

CONFIG = RunConfig(task="rte", modules=("layernorm",), layers="5", max_train=16, max_eval=16, device="cpu")


def test_tag_run_and_set_run_labels(registry):
    run_id = registry.insert_queued(CONFIG, submitter="me")
    assert actions.tag_run(registry, f"#{run_id}", "Baseline, ln-only  seed:3", "first", "me") == {
        "id": run_id,
        "tags": ["baseline", "ln-only", "seed:3"],
        "notes": "first",
    }
    assert actions.tag_run(registry, run_id, ["seed:3"], None, "me", remove=True)["tags"] == ["baseline", "ln-only"]
    assert actions.set_run_labels(registry, str(run_id), "only-this", "", "me") == {
        "id": run_id,
        "tags": ["only-this"],
        "notes": None,
    }
    assert actions.set_run_labels(registry, run_id, "", None, "me")["tags"] == []
    with pytest.raises(TagError, match="tag 'no/slash' has '/'"):
        actions.tag_run(registry, run_id, "ok no/slash", "kept?", "me")
    assert registry.get(run_id).note is None  # the refused edit changed nothing
    with pytest.raises(FormError, match="a run id is a whole number"):
        actions.tag_run(registry, "twelve", "x", None, "me")


def test_in_public_mode_a_visitor_tags_and_annotates_only_their_own_runs(registry):
    mine = registry.insert_queued(CONFIG, submitter="visitor-a")
    theirs = registry.insert_queued(CONFIG, submitter="visitor-b", tags=["theirs"], note="theirs")
    set_public(PublicLimits(), registry)
    try:
        assert actions.tag_run(registry, mine, "mine", "my note", "visitor-a")["tags"] == ["mine"]
        for call in (
            lambda: actions.tag_run(registry, theirs, "mine", None, "visitor-a"),
            lambda: actions.tag_run(registry, theirs, "theirs", None, "visitor-a", remove=True),
            lambda: actions.set_run_labels(registry, theirs, "", "", "visitor-a"),
        ):
            with pytest.raises(LimitError, match="queued by another visitor: .* tag or annotate only your own runs"):
                call()
    finally:
        set_public(None)
    assert (registry.get(theirs).tags, registry.get(theirs).note) == (["theirs"], "theirs")
    assert actions.tag_run(registry, theirs, "anyone", None, "visitor-a")["tags"] == ["anyone", "theirs"]  # open lab
