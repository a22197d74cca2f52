"""Each run setting is one RunConfig field whose Knob gives its flag, its form entry, its checks and its help."""

import argparse
import dataclasses
import re

import pytest

from moduletune.app.experiment.form import ADVANCED, FORM_FIELDS, FORM_PARAMS, Form
from moduletune.app.experiment.plan import build_configs
from moduletune.app.experiment.preview import preview
from moduletune.tuning.config import KNOBS, RunConfig
from moduletune.tuning.flags import add_run_flags, config_from_args, run_flags


def test_every_setting_has_a_cli_flag_and_a_form_entry_unless_it_is_internal():
    flags = {name: flag for name, flag, _options in run_flags()}
    for f in dataclasses.fields(RunConfig):
        knob = f.metadata["knob"]
        assert knob.help, f"{f.name} has no help text"
        if knob.internal:
            assert f.name not in flags and knob.form is None, f"{f.name} is internal but a person can set it"
            continue
        assert f.name in flags, f"RunConfig.{f.name} has no CLI flag (or mark it internal)"
        assert knob.form in FORM_FIELDS or (knob.form == "advanced" and f.name in ADVANCED), (
            f"RunConfig.{f.name} has no entry in the Experiment form (or mark it internal)"
        )
    assert set(FORM_PARAMS) == set(FORM_FIELDS) | set(ADVANCED)


def test_the_flags_are_made_from_the_knobs_and_their_defaults_are_the_configs():
    parser = argparse.ArgumentParser()
    add_run_flags(parser)
    assert config_from_args(parser.parse_args([])) == RunConfig()
    args = parser.parse_args(
        [
            "--no-head",
            "--no-cuda-graphs",
            "--compile",
            "--warmup-ratio",
            "0.2",
            "--eval-on",
            "holdout",
            "--lr-grid",
            "1e-3,1e-2",
            "--modules",
            "Q+V",
        ]
    )
    config = config_from_args(args)
    assert (
        config.train_head,
        config.cuda_graphs,
        config.compile,
        config.warmup_ratio,
        config.eval_on,
        config.lr_grid,
        config.modules,
    ) == (False, False, True, 0.2, "holdout", (1e-3, 1e-2), ("query", "value"))
    with pytest.raises(SystemExit):
        parser.parse_args(["--precision", "fp8"])  # choices come from the knob
    assert "passes over the training rows" in parser.format_help()  # so does the help


def test_the_forms_advanced_settings_reach_the_configs_and_are_checked_by_the_knob(home, glue_dir):
    form = Form(
        tasks=["rte"],
        layers=["5"],
        max_train=32,
        advanced={
            "warmup_ratio": 0.2,
            "max_seq_len": 64.0,
            "lr_grid": "1e-3, 1e-2",
            "eval_every": None,
            "glue_dir": "",
        },
    )
    (config,) = build_configs(form)
    assert (config.warmup_ratio, config.max_seq_len, config.lr_grid, config.eval_every, config.glue_dir) == (
        0.2,
        64,
        (1e-3, 1e-2),
        None,
        None,
    )
    for bad, message in (
        ({"max_seq_len": 4.0}, "max sequence length must be a whole number from 8 to 4,096"),
        ({"warmup_ratio": 1.5}, r"warmup ratio must be a number in \[0, 1\)"),
        ({"max_seq_len": 64.5}, "max sequence length must be a whole number"),
        ({"no_such": 1}, "advanced settings are a mapping of"),
    ):
        view = preview(Form(tasks=["rte"], layers=["5"], advanced=bad))
        assert view["runs"] == 0
        assert re.search(message, view["error"]), view["error"]
    assert all(k.form == "advanced" for name, k in KNOBS.items() if name in ADVANCED)
