"""`moduletune serve`: the Gradio app, with an embedded worker as a child process by default.

The worker is `python -m moduletune.cli.main worker --workers 1` in its own process group: the UI never trains
in its own process, a worker crash never takes the UI down (it is restarted, and the Runs tab shows
its status), and when the server stops the worker gets SIGTERM — its run stops at the next step,
checkpoints and goes back on the queue — and is waited for. On Linux the worker also gets SIGTERM
if the server itself is killed (PR_SET_PDEATHSIG), so no orphan keeps training.
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from moduletune.app.experiment.form import Form
from moduletune.app.experiment.preview import preview
from moduletune.app.public import visitors
from moduletune.app.ui import CSS, build_app, theme
from moduletune.tasks.parent_death import parent_death_signal
from moduletune.tasks.registry import Registry

log = logging.getLogger("moduletune.server")
REPO = Path(__file__).resolve().parent.parent
STOP_TIMEOUT_ENV = "MODULETUNE_STOP_TIMEOUT"
DEFAULT_STOP_TIMEOUT = 60.0  # seconds; the image sets 8, inside Docker's default 10 s stop
CLOSE_TIMEOUT = 2.0  # seconds the UI's close may take at a stop before the process exits anyway
RESTART_WINDOW = 300.0  # seconds: more than MAX_RESTARTS deaths within this gives up (a broken setup)
MAX_RESTARTS = 5


def stop_timeout_setting() -> float:
    """How long a stop waits for the worker to checkpoint and re-queue its run before killing it:
    MODULETUNE_STOP_TIMEOUT, else 60 s."""
    text = os.environ.get(STOP_TIMEOUT_ENV) or str(DEFAULT_STOP_TIMEOUT)
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 86400:
        raise ValueError(f"{STOP_TIMEOUT_ENV} must be a number of seconds above 0, at most 86400, got {text!r}")
    return value


class EmbeddedWorker:
    """`moduletune worker` as a supervised child: started with the server, restarted if it dies, stopped with it."""

    def __init__(self, args: tuple[str, ...] = ("--workers", "1"), stop_timeout: float | None = None, env=None):
        self.args = list(args)
        self.stop_timeout = stop_timeout_setting() if stop_timeout is None else stop_timeout
        self.env = env
        self.proc: subprocess.Popen | None = None
        self.deaths: list[float] = []
        self.last_exit: int | None = None
        self.gave_up = False
        self._stopping = threading.Event()
        self._signalled = False  # SIGTERM sent once: a second would cut the worker's graceful stop short
        self._lock = threading.Lock()
        self._watcher: threading.Thread | None = None

    def command(self) -> list[str]:
        return [sys.executable, "-m", "moduletune.cli.main", "worker", *self.args]

    def start(self) -> "EmbeddedWorker":
        """Start the worker and a watcher thread that restarts it when it dies."""
        self._stopping.clear()
        self._watcher = threading.Thread(target=self._watch, name="embedded-worker", daemon=True)
        self._watcher.start()
        deadline = time.monotonic() + 10
        while self.proc is None and time.monotonic() < deadline and self._watcher.is_alive():
            time.sleep(0.05)
        return self

    def _spawn(self) -> None:
        env = {**os.environ, **(self.env or {})}
        env.setdefault("TOKENIZERS_PARALLELISM", "false")
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
        with self._lock:
            if self._stopping.is_set():  # stop() has already read self.proc: a child started now would be orphaned
                return
            # Own process group: a terminal's Ctrl-C reaches the server, which then stops the worker in order.
            self.proc = subprocess.Popen(
                self.command(),
                cwd=str(REPO),
                env=env,
                start_new_session=True,
                preexec_fn=parent_death_signal(signal.SIGTERM),
            )
        log.info("embedded worker started (pid %s)", self.proc.pid)
        print(f"moduletune serve: embedded worker started (pid {self.proc.pid})", file=sys.stderr, flush=True)

    def _watch(self) -> None:
        # Spawned from this long-lived thread: PR_SET_PDEATHSIG follows the thread that forked the child.
        try:
            self._supervise()
        finally:
            # The child gets SIGTERM when this thread ends (PDEATHSIG): outlive it, so that in an orderly
            # stop() the child sees one SIGTERM, not a second one in the middle of its graceful stop.
            proc = self.proc
            if proc is not None:
                proc.wait()

    def _supervise(self) -> None:
        while not self._stopping.is_set():
            if self.proc is None or self.proc.poll() is not None:
                if self.proc is not None:
                    self.last_exit = self.proc.returncode
                    now = time.monotonic()
                    self.deaths = [t for t in self.deaths if now - t < RESTART_WINDOW] + [now]
                    print(
                        f"moduletune serve: embedded worker exited with code {self.last_exit}",
                        file=sys.stderr,
                        flush=True,
                    )
                    if len(self.deaths) > MAX_RESTARTS:
                        self.gave_up = True
                        print(
                            "moduletune serve: the embedded worker keeps dying; not restarting it "
                            "(the UI keeps running; start `moduletune worker` to train runs)",
                            file=sys.stderr,
                            flush=True,
                        )
                        return
                    if self._stopping.wait(min(30.0, 2.0 ** len(self.deaths))):
                        return
                try:
                    self._spawn()
                except OSError as err:
                    print(f"moduletune serve: could not start the worker: {err}", file=sys.stderr, flush=True)
                    self.proc = None
                    self.deaths.append(time.monotonic())
                    if self._stopping.wait(5):
                        return
            self._stopping.wait(1.0)

    def status(self) -> str:
        """One line for the UI: running (pid), restarting, or stopped and why."""
        proc = self.proc
        if self.gave_up:
            return (
                f"⚠️ embedded worker stopped (exit code {self.last_exit}) after {len(self.deaths)} restarts; "
                "runs stay queued until a worker runs"
            )
        if proc is None:
            return "embedded worker starting…"
        if proc.poll() is None:
            restarted = f", restarted {len(self.deaths)}×" if self.deaths else ""
            return f"embedded worker running (pid {proc.pid}{restarted})"
        return f"⚠️ embedded worker exited (code {proc.returncode}); restarting…"

    def stop(self, timeout: float | None = None) -> int | None:
        """SIGTERM (graceful: the run checkpoints and is re-queued), wait, then SIGKILL the group if needed.

        Safe to call again, from another thread too: the worker is signalled once and every caller waits."""
        self._stopping.set()
        with self._lock:
            proc, first = self.proc, not self._signalled
            self._signalled = True
        try:
            if proc is None or proc.poll() is not None:
                return None if proc is None else proc.returncode
            timeout = self.stop_timeout if timeout is None else timeout
            try:
                if first:
                    proc.send_signal(signal.SIGTERM)
                return proc.wait(timeout)
            except subprocess.TimeoutExpired:
                print(
                    f"moduletune serve: the worker did not stop within {timeout:.0f}s; killing it",
                    file=sys.stderr,
                    flush=True,
                )
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                return proc.wait(10)
            finally:
                if first:
                    print("moduletune serve: embedded worker stopped", file=sys.stderr, flush=True)
        finally:
            if self._watcher is not None:
                self._watcher.join(timeout=5)


# The app has no file inputs, so Gradio's upload route has nothing to take: anything over a kilobyte is refused
# (413) instead of filling the server's disk.
MAX_UPLOAD = "1kb"


def launch_kwargs(host: str, port: int, share: bool, public: bool = False) -> dict:
    """Gradio 6 launch settings (theme and CSS live here since Gradio 6).

    In public mode an unexpected error reaches a visitor as Gradio's bare "Error", never its text (which can
    quote SQL or paths); the handlers themselves turn every refusal into a one-line message (app.public.errors)."""

    return dict(
        server_name=host,
        server_port=int(port),
        share=share,
        theme=theme(),
        css=CSS,
        ssr_mode=False,
        show_error=not public,
        footer_links=["api"],
        quiet=False,
        run_history=False,
        max_file_size=MAX_UPLOAD,
    )


def check_port(host: str, port: int) -> None:
    """Refuse a port something else already listens on, with what to do about it."""
    import socket

    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, int(port)))
        except OSError as err:
            raise ValueError(
                f"cannot serve on {host}:{port}: {err.strerror or err} "
                "(is moduletune already running? choose another port with --port)"
            ) from None


def warm_up() -> None:
    """Load the default model's config and count its parameters once, so the first page shows its preview fast."""
    try:
        preview(Form())
    except Exception as err:  # a warm-up never stops the server; the form will show the error
        log.warning("warm-up failed: %s", err)


DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 7860
HOST_ENV, PORT_ENV = "GRADIO_SERVER_NAME", "GRADIO_SERVER_PORT"  # Gradio's own names, as every Gradio app reads


def port_number(text) -> int:
    """A port from a flag or GRADIO_SERVER_PORT: a whole number from 1 to 65535, else a message saying so."""
    try:
        port = int(text)
    except (TypeError, ValueError):
        port = 0
    if not 1 <= port <= 65535:
        raise ValueError(f"the port must be a whole number from 1 to 65535 (--port or {PORT_ENV}), got {text!r}")
    return port


def address(host: str | None = None, port: int | str | None = None) -> tuple[str, int]:
    """Where to listen: the arguments, else GRADIO_SERVER_NAME / GRADIO_SERVER_PORT, else 127.0.0.1:7860."""
    host = host or os.environ.get(HOST_ENV) or DEFAULT_HOST
    return host, port_number(port if port not in (None, "") else os.environ.get(PORT_ENV) or DEFAULT_PORT)


def browser_url(host: str, port: int) -> str:
    """The address a person opens: every interface (0.0.0.0, ::) is reached at localhost on this machine."""
    shown = "localhost" if host in ("0.0.0.0", "::", "") else (f"[{host}]" if ":" in host else host)
    return f"http://{shown}:{port}"


def serve(
    host: str | None = None,
    port: int | None = None,
    worker: bool = True,
    share: bool = False,
    registry=None,
    worker_args: tuple[str, ...] = ("--workers", "1"),
    block: bool = True,
    public=None,
    exit_when_stopped: bool = False,
):
    """Launch the app (and, with worker=True, an embedded worker child); blocks until Ctrl-C or SIGTERM.

    public=PublicLimits(...) serves the public demo (app.public.limits). With block=False returns
    (blocks, embedded_worker) with the server running in the background. exit_when_stopped (`moduletune serve`
    itself): once stopped, the process ends at once, without the interpreter's seconds-long teardown."""

    host, port = address(host, port)
    demo, embedded = start_app(host, port, worker, registry, worker_args, public)
    launch = launch_kwargs(host, port, share, public is not None)
    if not block:
        demo.launch(prevent_thread_lock=True, **launch)
        return demo, embedded
    run_until_stopped(demo, embedded, host, port, launch)
    if exit_when_stopped:
        exit_now()
    return 0


def start_app(host: str, port: int, worker: bool, registry, worker_args: tuple[str, ...], public):
    """Check the registry and the port, start the embedded worker, build the Blocks: (demo, embedded or None)."""
    registry = registry or Registry()
    registry.count()  # fail fast, naming the URL, if the registry is unreachable; creates the schema
    check_port(host, port)  # ... and before a worker is started for nothing
    embedded = EmbeddedWorker(worker_args).start() if worker else None
    status = (
        embedded.status
        if embedded
        else (lambda: "no embedded worker (started with --no-worker): runs wait for `moduletune worker`")
    )
    if public is not None:
        print(f"moduletune serve: public mode: {public}", file=sys.stderr, flush=True)
    visitors.trust_no_proxy_by_default()  # a visitor is their address, not a header they typed (app.public.visitors)
    demo = build_app(registry, worker_status=status, public=public)
    # After the build, which reads the default model's config: two threads importing transformers' lazy module
    # at once can see it half made ("cannot import name 'AutoConfig'").
    threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
    demo.queue(default_concurrency_limit=4)
    return demo, embedded


def run_until_stopped(demo, embedded, host: str, port: int, launch: dict) -> None:
    """Launch the UI and wait for Ctrl-C or SIGTERM; then close the UI while the worker stops."""
    stopping = threading.Event()

    def interrupt(signum, frame):  # SIGTERM ends the server the way Ctrl-C does
        if stopping.is_set():  # a second signal: the stop under way finishes, uninterrupted
            return
        stopping.set()
        if embedded is not None:  # told at once, so its run is checkpointed and re-queued whatever the UI waits on
            threading.Thread(target=embedded.stop, name="stop-worker", daemon=True).start()
        raise KeyboardInterrupt

    main = threading.current_thread() is threading.main_thread()
    # SIGINT too: started in the background of a non-interactive shell (CI, `cmd &`), Python inherits
    # SIGINT as ignored and installs no Ctrl-C handler, so the image's STOPSIGNAL would do nothing.
    stop_signals = (signal.SIGINT, signal.SIGTERM)
    previous = {s: signal.signal(s, interrupt) for s in stop_signals} if main else {}
    try:
        demo.launch(prevent_thread_lock=True, **launch)
        print(f"moduletune serve: ready; open {browser_url(host, port)} in a browser", file=sys.stderr, flush=True)
        # Not demo.block_thread(): it takes the interrupt itself and waits for the server to close (its open
        # connections) before this function could stop the worker.
        while not stopping.is_set():
            time.sleep(0.2)
    except KeyboardInterrupt:
        pass
    except OSError as err:  # the port is taken, or the address is not ours
        raise ValueError(
            f"could not serve on {host}:{port}: {str(err).splitlines()[0]} (choose another with --port)"
        ) from None
    finally:
        stopping.set()
        closing = _close(demo)  # the UI closes while the worker stops, not after
        if embedded is not None:
            embedded.stop()
        closing.join(CLOSE_TIMEOUT)  # an open connection must not hold the process past its stop
        for signum, handler in previous.items():
            signal.signal(signum, handler)


def exit_now() -> None:
    """End the process at once: the worker has stopped (its run re-queued) and the UI is closed; all that is left
    is Python tearing down gradio and torch, about 2 s that a container's stop (10 s in all) cannot spare."""
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def _close(demo) -> threading.Thread:
    """Close the UI in a thread of its own (returned, to be joined with a time limit)."""

    def close():
        try:
            demo.close()
        except Exception:  # closing an already-closed server is fine
            pass

    closer = threading.Thread(target=close, name="close-ui", daemon=True)
    closer.start()
    return closer
