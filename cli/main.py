"""`moduletune <command>`: the top-level parser, each command group's subcommands registered by its own module
(train, queue, runs, studies, export, serve), and the dispatch to the command's function."""

from __future__ import annotations

import argparse
import sys

from moduletune.cli import export, queue, runs, serve, studies, train

USER_ERRORS: tuple[type[BaseException], ...] = (ValueError, FileNotFoundError)
GROUPS = (train, queue, runs, serve, export, studies)  # the order of the commands in --help
DESCRIPTION = (
    "Fine-tune only the module families you choose (LayerNorm, query, FFN ..., LoRA, (IA)3) on GLUE, queue runs "
    "and studies, read and export them, and serve the web app. `moduletune COMMAND --help` says more."
)


def build_parser() -> argparse.ArgumentParser:
    """The parser of every command: each group adds its own."""
    parser = argparse.ArgumentParser(prog="moduletune", description=DESCRIPTION)
    sub = parser.add_subparsers(dest="command", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args) or 0
    except USER_ERRORS as err:
        print(f"moduletune: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("moduletune: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
