#!/usr/bin/env bash
# Refresh requirements.lock: the exact versions the Space image installs (make lock).
# Resolved by pip in a fresh virtual environment holding torch's CPU build (what the image installs
# first, from the CPU index) and then the project with its runtime dependencies and the two backends; torch itself and
# the project are left out of the lock, since the Dockerfile installs them on their own.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$PYTHON" -m venv "$work/venv"
"$work/venv/bin/pip" install -q --upgrade pip
"$work/venv/bin/pip" install -q "torch==2.13.0"
# The image serves a Space (SQLite) and the docker-compose lab (PostgreSQL + Redis): both backends.
"$work/venv/bin/pip" install -q ".[postgres,redis]"
# Pinned too, though this interpreter may not need them, so that the image's `pip install --no-deps -r
# requirements.lock && pip check` passes: setuptools (torch needs it on newer Pythons; it builds the wheel) and
# async-timeout (redis needs it below Python 3.11.3, such as Debian bookworm's 3.11.2).
"$work/venv/bin/pip" install -q "setuptools>=77" "async-timeout>=4.0.3"
{
    echo "# The Space image's exact dependencies (Python $("$work/venv/bin/python" -c 'import sys; print(".".join(map(str, sys.version_info[:2])))'), Linux; torch and moduletune are installed on their own)."
    echo "# Refresh with: make lock"
    "$work/venv/bin/pip" freeze --all --exclude-editable \
        | grep -v -i -E '^(torch|pip|wheel)==|^moduletune( |=)' \
        | sort -f
} > requirements.lock
echo "wrote requirements.lock ($(grep -c '==' requirements.lock) pinned packages)"
