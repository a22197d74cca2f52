"""'Show the command': the printed `moduletune submit/sweep` line, run in a real shell, queues the form's runs."""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys

import pytest

from moduletune.app.experiment.form import Form
from moduletune.app.experiment.form_command import form_command
from moduletune.app.experiment.plan import build_configs
from moduletune.app.experiment.submit import submit_form
from moduletune.app.public.checks import FormError
from tests.conftest import REPO

FORMS = {
    "one run": dict(tasks=["rte"], families=["layernorm"], layers=["5"], seeds="0", max_train=64, max_eval=32),
    "families x seeds": dict(tasks=["rte"], families=["query", "value"], layers=["4", "5"], seeds="0,1"),
    "together, random, no head, typed lr": dict(
        tasks=["mrpc"], families=["query", "key"], together=True, random_control=True, train_head=False, lr=0.003
    ),
    "each layer, two tasks, lr search": dict(
        tasks=["rte", "sst2"], families=["ffn_output"], each_layer=True, lr_search=True, seeds="0,2"
    ),
    "advanced settings": dict(
        tasks=["rte"], families=["bias"], advanced={"warmup_ratio": 0.25, "weight_decay": 0.05}, epochs=2
    ),
}


def queued_configs(registry, ids) -> list[str]:
    """The stored configs of these runs, as comparable JSON (the id and the sweep aside)."""
    return sorted(json.dumps(registry.get(i).config_data, sort_keys=True) for i in ids)


@pytest.mark.parametrize("name", sorted(FORMS))
def test_the_command_queues_what_submit_queues(name, registry, glue_dir):
    form = Form(**FORMS[name])
    command = form_command(form)
    single = len(build_configs(form)) == 1
    assert command.startswith("moduletune submit " if single else "moduletune sweep "), command

    by_form = submit_form(registry, form, "me").ids
    assert by_form, "the form itself was refused"
    before = {r.id for r in registry.list_runs()}
    words = shlex.split(command)
    env = {**os.environ, "MODULETUNE_GLUE_DIR": str(glue_dir)}
    proc = subprocess.run(
        [sys.executable, "-m", "moduletune.cli.main", *words[1:], "--json"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    by_command = sorted({r.id for r in registry.list_runs()} - before)
    assert queued_configs(registry, by_command) == queued_configs(registry, by_form)


def test_an_invalid_form_shows_no_command():
    with pytest.raises(FormError) as err:
        form_command(Form(max_train=-5))
    assert err.value.field == "max_train"
