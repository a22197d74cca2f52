"""The Huey instance: a SQLite file in MODULETUNE_HOME by default, Redis when MODULETUNE_QUEUE_URL says redis://.

Built lazily and cached per URL (and per process, so a forked worker never shares a parent's
connection): importing this module opens nothing. The queue carries only run ids; everything
else about a run lives in the registry (tasks.registry), which is the source of truth.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from moduletune.tuning.settings import home
from moduletune.tuning.text import one_line, without_password

QUEUE_URL_ENV = "MODULETUNE_QUEUE_URL"
QUEUE_NAME_ENV = "MODULETUNE_QUEUE_NAME"
DEFAULT_QUEUE_NAME = "moduletune"
TASK_NAME = "run_registry_job"

log = logging.getLogger("moduletune.queue")
_HUEYS: dict[tuple, object] = {}
_LOCK = threading.Lock()
_TASK_BODY = None  # set in worker processes by set_task_body


class QueueError(ValueError):
    """The queue could not be reached or used; the message says which queue and why."""


def queue_url() -> str:
    """MODULETUNE_QUEUE_URL, else a SQLite Huey file in MODULETUNE_HOME."""
    return os.environ.get(QUEUE_URL_ENV) or f"sqlite:///{home() / 'queue.db'}"


def queue_name() -> str:
    """The queue's name (a Redis key prefix, a column in the SQLite file): MODULETUNE_QUEUE_NAME."""
    return os.environ.get(QUEUE_NAME_ENV) or DEFAULT_QUEUE_NAME


def describe(url: str | None = None) -> str:
    """The queue URL (default: the configured one) without a password, for messages and logs."""
    return without_password(url or queue_url())


def build_huey(url: str, name: str):
    """A fresh Huey for url (redis://, rediss://, unix:// -> PriorityRedisHuey; sqlite:///path -> SqliteHuey): both
    take higher-priority messages first."""
    from huey import PriorityRedisHuey, SqliteHuey

    if url.startswith(("redis://", "rediss://", "unix://")):
        try:
            import redis  # noqa: F401  (an optional backend: the extra moduletune[redis])
        except ImportError:
            raise QueueError(
                f"the queue {describe(url)} needs the Redis client, which is not installed: "
                "pip install 'moduletune[redis]'"
            ) from None
        # Blocking reads with a short timeout: idle workers cost Redis nothing and still see a stop quickly.
        huey = PriorityRedisHuey(name, url=url, results=False, blocking=True, read_timeout=1)
    elif url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :]).expanduser()
        path.parent.mkdir(parents=True, exist_ok=True)
        huey = SqliteHuey(name, filename=str(path), results=False, timeout=30)
    else:
        raise QueueError(
            f"unsupported queue URL {describe(url)!r}; use sqlite:///path/to/queue.db "
            f"or redis://host:port/db (set {QUEUE_URL_ENV})"
        )
    huey.moduletune_run = huey.task(name=TASK_NAME)(_run_registry_job)
    return huey


def _prioritize_old_queue(huey) -> None:
    """Move the messages of a queue an older release kept as a Redis list (no priorities) into the sorted set a
    priority queue reads: the key's type would otherwise refuse every message. The list is renamed aside first
    (atomic), so nothing is read twice; a message lost in a race is sent again by requeue_lost."""
    conn, key = huey.storage.conn, huey.storage.queue_key
    if conn.type(key) not in (b"list", "list"):
        return
    aside = key + ".list"
    conn.rename(key, aside)
    waiting = conn.lrange(aside, 0, -1)[::-1]  # lpush puts the newest first
    for data in waiting:
        huey.storage.enqueue(data)
    conn.delete(aside)
    log.warning("the Redis queue %s held %d messages in a list (an older release): now prioritised", key, len(waiting))


def get_huey(url: str | None = None, name: str | None = None):
    """The Huey for url (default: settings), built on first use and cached per process; a SQLite queue file
    deleted or replaced since is reopened, so no process keeps writing to a file nobody reads."""
    url, name = url or queue_url(), name or queue_name()
    key = (url, name, os.getpid())
    with _LOCK:
        if key not in _HUEYS:
            try:
                _HUEYS[key] = build_huey(url, name)
            except QueueError:
                raise
            except Exception as err:  # e.g. an unwritable SQLite file
                raise QueueError(
                    f"could not open the queue at {describe(url)}: {one_line(err, with_type=True)}"
                ) from None
        huey = _HUEYS[key]
    reopen_if_replaced(huey)
    return huey


def _file_identity(path: str) -> tuple | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return st.st_dev, st.st_ino


def reopen_if_replaced(huey) -> bool:
    """A SQLite queue whose file was deleted or replaced under this process: close the old connection and open
    (creating, if need be) the file now at the path. True when it reopened; Redis queues never need it.

    Without this a worker kept reading a deleted queue.db while the CLI wrote new messages to its successor."""
    filename = getattr(huey.storage, "filename", None)
    if not filename:
        return False
    now = _file_identity(filename)
    opened = getattr(huey.storage, "moduletune_file", None)
    if opened is None:  # first look: remember the file this storage opened (its schema created it)
        huey.storage.moduletune_file = now
        return False
    if now == opened:
        return False
    log.warning("the queue file %s was %s; reopening it", filename, "deleted" if now is None else "replaced")
    huey.storage.close()
    huey.storage.initialize_schema()  # creates the file and its tables when it is gone
    huey.storage.moduletune_file = _file_identity(filename)
    return True


def set_task_body(body) -> None:
    """Install what the queue's task does with a run id (the worker installs tasks.jobs.run_job).

    The queue carries run ids and knows nothing of training: producers (the UI, the CLI) only send
    messages, and the consumer process says what runs them, so this module imports no job code."""
    global _TASK_BODY
    _TASK_BODY = body


def _run_registry_job(run_id: int) -> str:
    """The Huey task: hand one run id to the installed body."""
    if _TASK_BODY is None:
        raise QueueError(f"run {run_id} reached a consumer that cannot train; start workers with `moduletune worker`")
    return _TASK_BODY(run_id)


def enqueue_run(run_id: int, huey=None, priority: int | None = None) -> None:
    """Put a run id on the queue (higher priorities are taken first); any failure becomes a QueueError naming the
    queue."""
    huey = huey or get_huey()
    try:
        try:
            huey.moduletune_run(int(run_id), priority=priority)
        except Exception as err:
            if "WRONGTYPE" not in str(err):
                raise
            _prioritize_old_queue(huey)  # a list an older release left: made a priority queue, then sent again
            huey.moduletune_run(int(run_id), priority=priority)
    except Exception as err:
        raise QueueError(
            f"could not enqueue run {run_id} on {describe(_huey_url(huey))}: {one_line(err, with_type=True)}"
        ) from None


def pending_count(huey=None) -> int:
    """How many messages wait in the queue (not counting ones a worker has taken)."""
    huey = huey or get_huey()
    try:
        return int(huey.pending_count())
    except Exception as err:
        raise QueueError(
            f"could not read the queue {describe(_huey_url(huey))}: {one_line(err, with_type=True)}"
        ) from None


def pending_run_ids(huey=None) -> list[int]:
    """The run ids waiting in the queue, in order."""
    huey = huey or get_huey()
    return [int(task.args[0]) for task in huey.pending()]


def requeue_lost(registry, huey=None, missing_before: frozenset = frozenset()) -> tuple[frozenset, list[int]]:
    """Put back the queued runs that no queue message holds (a Redis restart or FLUSHALL, a deleted queue file).

    A run counts as lost when it was missing at this check and at the one before (missing_before): a message
    a worker has just taken but not yet claimed is missing only for an instant. A second message for a run is
    harmless, since a claim is exactly-once. Returns (missing now, for the next check; the ids re-queued)."""
    huey = huey or get_huey()
    reopen_if_replaced(huey)
    missing = frozenset(registry.queued_ids()) - set(pending_run_ids(huey))
    lost = sorted(missing & missing_before)
    for run_id in lost:
        enqueue_run(run_id, huey, priority=registry.priority_of(run_id))
        log.warning("run %s was queued but no queue held its message; re-queued", run_id)
    return missing - set(lost), lost


def flush(huey=None) -> None:
    """Drop every waiting message (tests, and an operator clearing a queue)."""
    (huey or get_huey()).flush()


def close_all() -> None:
    """Close this process's queue connections (before forking workers, and at exit)."""
    with _LOCK:
        for key, huey in list(_HUEYS.items()):
            if key[2] == os.getpid():
                try:
                    huey.storage.close()
                except Exception:  # closing is best effort
                    pass


def _huey_url(huey) -> str:
    for (url, name, _pid), cached in _HUEYS.items():
        if cached is huey:
            return url
    return getattr(huey.storage, "filename", None) or huey.name
