"""The optional backends: a PostgreSQL registry or a Redis queue without its client installed is refused at
once, naming the extra to install (not an ImportError from deep inside SQLAlchemy or Huey)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO

# The client is made unimportable in a fresh interpreter, as it is where the extra was never installed.
CASES = {
    "postgres": (
        "psycopg",
        "from moduletune.tasks.registry import Registry; Registry('postgresql://u@127.0.0.1:1/x').count()",
        "needs the PostgreSQL driver, which is not installed: pip install 'moduletune[postgres]'",
    ),
    "redis": (
        "redis",
        "from moduletune.tasks.queue import get_huey; get_huey('redis://127.0.0.1:1/0')",
        "needs the Redis client, which is not installed: pip install 'moduletune[redis]'",
    ),
}


@pytest.mark.parametrize("extra", sorted(CASES))
def test_a_backend_without_its_client_names_the_extra(extra, home):
    module, code, expected = CASES[extra]
    script = (
        f"import sys; sys.modules[{module!r}] = None\n"  # `import psycopg` now raises ImportError
        "try:\n"
        f"    {code}\n"
        "except ValueError as err:\n"
        "    print(type(err).__name__, err)\n"
    )
    out = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and expected in out.stdout, out.stdout + out.stderr
    assert "Traceback" not in out.stderr
