"""Public mode (`moduletune serve --public`, on in the Space): the limits that keep a shared lab safe.

Every limit is an environment variable with a default that suits a free CPU Space:

| variable                                   | default          | what it bounds                                   |
| ------------------------------------------ | ---------------- | ------------------------------------------------ |
| MODULETUNE_PUBLIC                          | off              | 1/true/yes/on turns public mode on (as --public) |
| MODULETUNE_PUBLIC_MAX_ACTIVE_PER_VISITOR   | 2                | queued + running runs of one visitor (visitors.py) |
| MODULETUNE_PUBLIC_MAX_QUEUED               | 20               | queued runs of everyone together                 |
| MODULETUNE_PUBLIC_MAX_EPOCHS               | 3                | epochs per run                                   |
| MODULETUNE_PUBLIC_MAX_TRAIN                | 2000             | training examples per run (0 = all is refused)   |
| MODULETUNE_PUBLIC_MAX_EVAL                 | 2000             | evaluation examples per run (0 = all is refused) |
| MODULETUNE_PUBLIC_MAX_SEQ_LEN              | 128              | max sequence length                              |
| MODULETUNE_PUBLIC_MAX_BATCH_SIZE           | 64               | batch size                                       |
| MODULETUNE_PUBLIC_MAX_LORA_RANK            | 64               | a LoRA run's rank (lora:<families>)              |
| MODULETUNE_PUBLIC_MODELS                   | all-MiniLM-L6-v2 | the models visitors may pick (comma list)        |

Beyond the numbers, public mode means: only allow-listed models (never a typed Hub id or a local path),
the GLUE data come from the server's own MODULETUNE_GLUE_DIR (never from a visitor), cancel and retry
act on a visitor's own runs only, and no visitor sees who submitted a run. The checks are pure apart from
reading the registry; it raises LimitError (a ValueError whose message says what the limit is) and
never queues anything itself.

The gate: public mode is process-wide (one server serves one app): `set_public(limits, registry)` turns it
on, `set_public(None)` off. Every submission, cancel and retry passes `allow` (the quotas: who, what, how
many) and `vet` (what the action touches: caps, the model allow-list, whose run it is), under `gate()`.
"""

from __future__ import annotations

import contextlib
import os
import threading
from dataclasses import dataclass, field, replace

from moduletune.app.public.checks import FormError
from moduletune.tasks.entities import Run
from moduletune.tasks.registry import Registry
from moduletune.tuning.config import DEFAULT_MODEL, RunConfig
from moduletune.tuning.settings import home

ENV_PREFIX = "MODULETUNE_PUBLIC"
TRUE = ("1", "true", "yes", "on")


class LimitError(ValueError):
    """A request public mode refuses; `field` names the form control it is about (app.experiment.fields.FIELDS),
    None when it is about no control (a quota, another visitor's run)."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class PublicLimits:
    """Everything public mode bounds; `from_env()` reads the MODULETUNE_PUBLIC_* variables."""

    max_active_per_visitor: int = 2
    max_queued: int = 20
    max_epochs: int = 3
    max_train: int = 2000
    max_eval: int = 2000
    max_seq_len: int = 128
    max_batch_size: int = 64
    models: tuple[str, ...] = field(default=(DEFAULT_MODEL,))
    max_lora_rank: int = 64  # after models: the limits are also built positionally

    @classmethod
    def from_env(cls, environ=None) -> "PublicLimits":
        """The limits from MODULETUNE_PUBLIC_* variables (unset ones keep their defaults); ValueError if malformed."""
        env = os.environ if environ is None else environ
        base = cls()
        values = {}
        for name in (
            "max_active_per_visitor",
            "max_queued",
            "max_epochs",
            "max_train",
            "max_eval",
            "max_seq_len",
            "max_batch_size",
            "max_lora_rank",
        ):
            var = f"{ENV_PREFIX}_{name.upper()}"
            text = str(env.get(var, "")).strip()
            if not text:
                values[name] = getattr(base, name)
                continue
            try:
                values[name] = int(text)
            except ValueError:
                raise ValueError(f"{var} must be a whole number, got {text!r}") from None
            if values[name] < 1:
                raise ValueError(f"{var} must be at least 1, got {values[name]}")
        models = [m.strip() for m in str(env.get(f"{ENV_PREFIX}_MODELS", "")).split(",") if m.strip()]
        return cls(**values, models=tuple(dict.fromkeys(models)) or base.models)

    def summary(self) -> str:
        """One Markdown paragraph for the page: every limit, in words."""
        return (
            f"**Public demo.** Up to **{self.max_active_per_visitor}** runs queued or running per visitor and "
            f"**{self.max_queued}** waiting in the shared queue; each run at most **{self.max_epochs}** epochs, "
            f"**{self.max_train:,}** training and **{self.max_eval:,}** evaluation examples, batch size "
            f"**{self.max_batch_size}**, sequence length **{self.max_seq_len}**, LoRA rank "
            f"**{self.max_lora_rank}**. Models: "
            f"{', '.join(self.models)}. You can cancel or retry only your own runs; everyone's runs appear in "
            "Runs (the finished ones in Compare), without who submitted them."
        )


def enabled(environ=None) -> bool:
    """MODULETUNE_PUBLIC=1 (or true/yes/on) turns public mode on without the --public flag."""
    env = os.environ if environ is None else environ
    return str(env.get(ENV_PREFIX, "")).strip().lower() in TRUE


# ---------------------------------------------------------------------------------------------- models


def looks_like_path(name: str) -> bool:
    """A typed name that points into a file system (judged from the text alone: nothing is read)."""
    text = str(name).strip()
    return text.startswith(("/", ".", "~")) or "\\" in text or ".." in text or ":" in text or text.count("/") > 1


def check_model(limits: PublicLimits, name) -> str:
    """The allow-listed model name for `name` (blank = the embedded default); LimitError('model') otherwise."""
    text = (str(name).strip() if name else "") or DEFAULT_MODEL
    allowed = {m.lower(): m for m in limits.models}
    if text.lower() in allowed:
        return allowed[text.lower()]
    choices = ", ".join(limits.models)
    if looks_like_path(text):
        raise LimitError(
            f"local paths cannot be used as models in this public demo ({text!r}); pick one of: {choices}", "model"
        )
    raise LimitError(f"model {text!r} is not available in this public demo; pick one of: {choices}", "model")


# ---------------------------------------------------------------------------------------------- the check


def _cap(value, cap: int, what: str, fld: str, zero_means_all: bool = False) -> None:
    if value is None and zero_means_all:
        raise LimitError(
            f"{what}: at most {cap:,} per run in this public demo (0 = the whole split is not "
            f"available here); set it to {cap:,} or fewer",
            fld,
        )
    if value is not None and int(value) > cap:
        raise LimitError(f"{what}: at most {cap:,} per run in this public demo, you asked for {int(value):,}", fld)


def check_config(limits: PublicLimits, config: RunConfig) -> None:
    """One run's settings against the caps (model, data folder, epochs, examples, length, batch, LoRA rank)."""
    check_model(limits, config.model)
    if config.glue_dir:
        raise LimitError(
            "a data folder cannot be chosen in this public demo: runs use the server's GLUE data", "settings"
        )
    if config.report_to not in (None, "", "none"):  # the server's disk and its trackers are the operator's
        raise LimitError(
            "experiment trackers cannot be chosen in this public demo (report to: leave it blank)", "settings"
        )
    _cap(config.epochs, limits.max_epochs, "epochs", "epochs")
    _cap(config.max_train, limits.max_train, "training examples", "max_train", zero_means_all=True)
    _cap(config.max_eval, limits.max_eval, "evaluation examples", "max_eval", zero_means_all=True)
    _cap(config.max_seq_len, limits.max_seq_len, "max sequence length", "settings")
    _cap(config.batch_size, limits.max_batch_size, "batch size", "batch_size")
    _cap(config.lora_rank, limits.max_lora_rank, "LoRA rank", "settings")


def active_runs(registry, submitter: str | None) -> int:
    """Queued plus running runs of one visitor."""
    return sum(
        1 for status in ("queued", "running") for r in registry.list_runs(status=status) if r.submitter == submitter
    )


def check_quota(limits: PublicLimits, registry, submitter: str | None, n: int = 1) -> None:
    """Refuse (LimitError) n more runs for `submitter` beyond their quota or the shared queue's length."""
    mine = active_runs(registry, submitter)
    if mine + n > limits.max_active_per_visitor:
        have = f"you have {mine} queued or running" if mine else "you have none queued or running"
        raise LimitError(
            f"at most {limits.max_active_per_visitor} runs queued or running per visitor in this "
            f"public demo: {have}, and this would add {n}. Wait for yours to finish, cancel one, "
            "or choose fewer tasks, families, layers or seeds"
        )
    queued = registry.count("queued")
    if queued + n > limits.max_queued:
        raise LimitError(
            f"the shared queue is full: at most {limits.max_queued} runs may wait in this public demo, "
            f"{queued} are waiting and this would add {n}. Try again when some have started"
        )


def check_owner(registry, run_id, submitter: str | None, action: str) -> Run:
    """The run, if `submitter` submitted it; LimitError otherwise (public visitors act on their own runs only)."""
    run = registry.get(int(run_id))
    if run.submitter != submitter:
        raise LimitError(
            f"run {int(run_id)} was queued by another visitor: in this public demo you can {action} only your own runs"
        )
    return run


# Kept for the operator (the registry, the CLI, the server log): who submitted a run, where its files are,
# and which host and process trained it.
PRIVATE_COLUMNS = ("submitter", "artifact_dir", "worker")
PRIVATE_RESULT_KEYS = ("artifact_dir", "checkpoint_dir", "versions")


def redact(run: Run) -> Run:
    """A run as a public visitor sees it: no submitter, file paths or worker host and pid (in its fields, its
    result and its error text)."""
    details = run.result.details
    if isinstance(details, dict):
        details = {k: v for k, v in details.items() if k not in PRIVATE_RESULT_KEYS}
    return replace(
        run,
        submitter=None,
        artifact_dir=None,
        placement=replace(run.placement, worker=None),
        result=replace(run.result, details=details),
        error=_scrub(run.error, run.placement.worker) if run.error else run.error,
    )


def public_record(run: Run, viewer: str | None = None) -> dict:
    """A run's JSON as a public visitor gets it: redact's, without the private keys at all; with a viewer, `mine`
    says whether it is the viewer's own."""
    out = {k: v for k, v in redact(run).to_dict().items() if k not in PRIVATE_COLUMNS}
    if viewer is not None:
        out["mine"] = run.submitter == viewer
    return out


def _scrub(text: str, worker: str | None) -> str:
    """An error message without the worker's host:pid and without paths under the server's folders."""
    import re

    if worker:
        text = text.replace(str(worker), "a worker")
    text = text.replace(str(home()), "<home>")
    return re.sub(r"(?<![\w<])/(?:[\w.+-]+/)+[\w.+-]*", "<path>", text)


# ---------------------------------------------------------------------------------------------- the gate


@dataclass(frozen=True)
class PublicMode:
    """Public mode's limits and the registry whose queue its quotas count."""

    limits: "PublicLimits"
    registry: object


_PUBLIC: PublicMode | None = None  # set by build_app (serve --public); None: an open lab
_GATE = threading.Lock()  # public mode: check a visitor's quota and queue the runs as one step


def set_public(limits: "PublicLimits | None", registry=None) -> None:
    """Public mode on (these limits, quotas counted in `registry`, default Registry()) or off (None)."""
    global _PUBLIC
    if limits is None:
        _PUBLIC = None
        return
    if registry is None:
        registry = Registry()
    _PUBLIC = PublicMode(limits, registry)


def public_limits() -> "PublicLimits | None":
    """The limits in force, or None outside public mode."""
    return _PUBLIC.limits if _PUBLIC is not None else None


def guard_model(name) -> None:
    """In public mode, refuse a model that is not allow-listed before anything reads it (FormError('model'))."""
    limits = public_limits()
    if limits is None:
        return

    try:
        check_model(limits, name)
    except LimitError as err:
        raise FormError("model", str(err)) from None


def allow(action: str, submitter: str | None, count: int = 1) -> None:
    """The one place the per-visitor quotas apply; raises ValueError (public.LimitError) to refuse.

    Open outside public mode. In public mode, `count` more runs (a submission or a retry) must fit the
    visitor's queued + running runs and the shared queue's length; a cancel is never over quota."""
    mode = _PUBLIC
    if mode is None or action == "cancel":
        return
    check_quota(mode.limits, mode.registry, submitter, count)


def vet(registry, submitter: str | None, configs=(), run_id=None, action: str = "submit") -> None:
    """Public mode's rules on what an action touches (allow counts, this looks): each config's caps
    (allow-listed model, no data folder, epochs, examples, length, batch), and for cancel/retry that the
    run is the visitor's own (a retry's config is vetted too). A no-op outside public mode."""
    mode = _PUBLIC
    if mode is None:
        return
    if run_id is not None:
        run = check_owner(registry, run_id, submitter, action)
        configs = [run.config] if action == "retry" else []
    for config in configs:
        check_config(mode.limits, config)


def vet_study(registry, study_id: int, submitter: str | None, action: str) -> None:
    """Public mode's rules on a whole study: only the visitor's own, and never raised over other visitors' runs.
    A no-op outside public mode (an unknown study is still refused: tasks.studies.StudyNotFound)."""
    study = registry.study(study_id)
    if _PUBLIC is None:
        return
    if study.owner != submitter:
        raise LimitError(
            f"study {int(study_id)} was queued by another visitor: in this public demo you can {action} only your own"
        )
    if action in ("raise", "lower"):
        raise LimitError("in this public demo a study cannot be put before other visitors' runs")


def gate():
    """In public mode, one check-then-queue at a time, so two quick clicks cannot both pass a quota."""
    return _GATE if _PUBLIC is not None else contextlib.nullcontext()
