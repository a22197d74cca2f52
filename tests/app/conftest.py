"""Fixtures shared by the app tests."""
import pytest

from tasks.registry import Registry


@pytest.fixture
def registry(home):
    """A real registry (SQLite + SqliteHuey) in the test's own MODULETUNE_HOME, closed afterwards."""
    reg = Registry()
    yield reg
    from tasks.queue import close_all
    from tasks.registry import dispose_engines

    dispose_engines()
    close_all()
