"""The flags that describe one run, generated from RunConfig's knobs; shared by `run`, `submit` and `sweep`."""

from __future__ import annotations

import argparse

from moduletune.tuning.config import DEFAULT_MODEL, KNOBS, RunConfig, parse_floats


def run_flags() -> list[tuple[str, str, dict]]:
    """(field, flag, argparse options) for every RunConfig setting a person sets, read from its Knob (as
    nanoGPT's configurator derives its overrides from the config): one place says what a setting is."""

    defaults = RunConfig.__dataclass_fields__
    types = {"int": int, "number": float, "floats": floats_flag}
    out = []
    for name, k in KNOBS.items():
        if k.internal or k.flag is None:
            continue
        flag = k.flag or "--" + name.replace("_", "-")
        default = defaults[name].default
        if k.kind == "bool":
            # A setting on by default is turned off by its flag (--no-head, --no-cuda-graphs).
            options = dict(action="store_false" if default else "store_true", dest=name)
            if default and not flag.startswith("--no-"):
                flag = "--no-" + flag[2:]
        else:
            options = dict(type=types.get(k.kind, str), default=None if name == "model" else default, dest=name)
            if k.choices:
                options["choices"] = list(k.choices)
            if name == "modules":
                options["default"] = "+".join(default)
        out.append((name, flag, {**options, "help": k.help}))
    return out


def add_run_flags(p: argparse.ArgumentParser) -> None:
    """The flags that describe one run (shared by run, submit and sweep), one per RunConfig setting."""
    for _name, flag, options in run_flags():
        p.add_argument(flag, **options)


def floats_flag(text: str) -> tuple[float, ...]:
    """A comma list of numbers as a flag's value (--lr-grid 1e-4,1e-3); argparse's error otherwise."""

    try:
        return parse_floats(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated numbers like 1e-4,1e-3,1e-2, got {text!r}"
        ) from None


def config_from_args(args, **overrides):
    """A validated RunConfig from parsed flags."""

    values = {name: getattr(args, name) for name, _flag, _options in run_flags()}
    values["model"] = values["model"] or DEFAULT_MODEL
    return RunConfig(**{**values, **overrides})
