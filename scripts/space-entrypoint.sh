#!/bin/sh
# The Space's one process tree: `moduletune serve` runs the UI and an embedded worker (its child) and,
# on SIGINT or SIGTERM, stops the worker first (the running run checkpoints and goes back on the queue),
# then the UI. `exec`, so the stop signal reaches moduletune itself.
#
# Data go to /data/moduletune when the Space has persistent storage (a writable /data), else to
# MODULETUNE_HOME (default ~/.moduletune): see tuning/settings.py. Public mode is on unless
# MODULETUNE_PUBLIC=0; its limits are the MODULETUNE_PUBLIC_* variables (app/public.py).
# Extra serve flags: MODULETUNE_SERVE_FLAGS (e.g. --no-worker) or this script's arguments.
set -eu

if [ -d /data ] && [ -w /data ]; then
    # Hub downloads (an allow-listed Hub model) persist with the runs.
    export HF_HOME="${HF_HOME:-/data/.huggingface}"
fi

public="--public"
case "${MODULETUNE_PUBLIC:-1}" in
    0 | false | False | FALSE | no | off) public="" ;;
esac

# shellcheck disable=SC2086  # $public and MODULETUNE_SERVE_FLAGS are flag lists, split on purpose
exec moduletune serve --host "${GRADIO_SERVER_NAME:-0.0.0.0}" --port "${PORT:-${GRADIO_SERVER_PORT:-7860}}" \
    $public ${MODULETUNE_SERVE_FLAGS:-} "$@"
