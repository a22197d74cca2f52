"""Fixtures shared by the app tests."""

import pytest

from moduletune.tasks.registry import Registry


@pytest.fixture
def registry(home):
    """A real registry (SQLite + SqliteHuey) in the test's own MODULETUNE_HOME, closed afterwards."""
    reg = Registry()
    yield reg
    from moduletune.tasks.queue import close_all
    from moduletune.tasks.registry import dispose_engines

    dispose_engines()
    close_all()
