"""What the Runs tab keeps per browser session, Gradio-free: the run the person picked, what the panel last showed,
and the message about their last Cancel or Retry, each refreshed from the registry.

The picked run is explicit: only a person's pick (the dropdown, a table row, a link's ?run=) sets it, and no
refresh ever writes it. Every detail answer is computed for one run id and carries the pick's version, so an
answer computed before a newer pick is dropped instead of drawn over it.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from moduletune.tasks.registry import RegistryError

_VERSIONS = itertools.count(1)  # one sequence for every session: a pick's version is never reused


@dataclass(frozen=True)
class Answer:
    """Which parts of the panel an answer sends (the rest is skipped: unchanged on screen)."""

    dropdown: bool  # the run dropdown's choices and value
    details: bool  # summary, curves, config, result, Cancel and Retry
    download: bool  # the download button (its file, or hidden)
    ready: int | None  # the run whose prepared archive the download button offers, or None


@dataclass
class RunsTabState:
    """One session's Runs tab (a gr.State: each session gets its own copy, changed in place by the handlers)."""

    picked: int | None = None  # the run the person picked; None: the panel follows run_list.default_run
    version: int = 0  # bumped by every pick: answers computed under an older version are stale
    shown: int | None = None  # the run whose details the panel shows now
    key: tuple = ()  # run_detail.detail_key of what is shown (unchanged: nothing to redraw)
    choices: tuple = ()  # the run dropdown's choices as last sent
    download_for: int | None = None  # the run whose archive was prepared (its button offers the file)
    download_path: str | None = None
    download_shown: int | None = None  # the run whose file the download button holds now
    action: tuple = ()  # ("cancel", run id) or ("retry", run id, new id): the last action, re-read on refresh
    action_text: str = ""
    sweeps: tuple = field(default=(None, ()))  # (the registry's run count, the sweep choices sent then)
    filters: dict = field(default_factory=dict)  # the table's filters as last applied (the run picker follows them)
    expanded: set = field(default_factory=set)  # parents opened in the top-level view: "study:N", "run:N"

    def toggle(self, key: str) -> None:
        """Open a folded parent (a study, a search), or fold it again."""
        self.expanded ^= {key}

    def pick(self, run_id) -> int:
        """The person picked a run (None: follow the default again); returns the new version."""
        self.picked = None if run_id in (None, "") else run_id
        self.version = next(_VERSIONS)
        return self.version

    def current(self, version: int) -> bool:
        """Whether an answer computed under `version` is still for the run the person wants."""
        return version == self.version

    def moved(self, run_id, key: tuple) -> bool:
        """Whether the details of run_id (now at detail key `key`) differ from what the panel shows."""
        return run_id != self.shown or key != self.key

    def answer(self, version: int, run_id, key: tuple, choices: tuple) -> Answer | None:
        """What an answer computed under `version` for run_id sends, recorded as now shown; None when a newer
        pick arrived meanwhile (the answer is stale: it sends nothing and changes nothing)."""
        if not self.current(version):
            return None
        ready = run_id if run_id is not None and self.download_for == run_id else None
        out = Answer(
            dropdown=choices != self.choices or run_id != self.shown,
            details=self.moved(run_id, key),
            download=ready != self.download_shown,
            ready=ready,
        )
        self.shown, self.key, self.choices, self.download_shown = run_id, key, choices, ready
        return out

    def prepared(self, run_id: int, path: str) -> bool:
        """Record run_id's archive for the download button, if run_id is still the run on screen."""
        if run_id != self.shown:
            return False
        self.download_for, self.download_path = run_id, path
        return True


def run_of_link(params) -> tuple[int | None, str]:
    """The run a link asks for (?run=12 or ?run=%2312): (its id, ''), (None, '') without one, or (None, a
    message naming the bad value) when it is no run number."""
    raw = (params or {}).get("run")
    if raw is None or not str(raw).strip():
        return None, ""
    text = str(raw).strip().lstrip("#")
    if text.isdigit() and int(text) > 0:
        return int(text), ""
    return None, (
        f"⚠️ The link's run={str(raw)[:40]!r} is not a run number (a link looks like ?tab=runs&run=12); "
        "showing the running run instead."
    )


def action_message(registry, action: tuple) -> str:
    """The last Cancel or Retry in words, as the run stands now: 'Run #4: cancelling (it stops at its next
    step).' turns into 'Run #4: cancelled.' once the worker stopped it."""

    if not action:
        return ""
    verb, run_id, *rest = action
    try:
        run = registry.get(int(rest[0] if verb == "retry" else run_id))
    except (RegistryError, ValueError) as err:
        return f"⚠️ {err}"
    status = run.status
    if verb == "retry":
        return f"✅ Run #{run_id} queued again as run **#{rest[0]}** (now {status})."
    if status == "running":
        return f"Run #{run_id}: cancelling (it stops at its next step)."
    if status == "cancelled":
        return f"Run #{run_id}: cancelled."
    return f"Run #{run_id}: {status} before the cancel took effect."
