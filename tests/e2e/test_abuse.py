"""A public lab under abuse, through gradio_client against a real server, on SQLite and on PostgreSQL + Redis.

`moduletune serve --public --no-worker` (nothing trains, so what is queued stays put to be counted). Every
malformed value from the fault probes (out-of-range integers, wrong types, None, NaN, megabyte strings) gets
a one-line message naming no internals and queues nothing; a request for a huge sweep is refused at once
while another visitor is answered; many connections from one address are one visitor; uploads are refused.
"""

from __future__ import annotations

import os
import re
import threading
import time
import uuid

import httpx
import pytest
from gradio_client import Client
from gradio_client.exceptions import AppError

from tests.tasks.conftest import postgres_server, redis_server  # noqa: F401  (fixtures)

from .conftest import TINY, _stop, _up, free_port, launch

BIG = "x" * 1_000_000
# JSON has no NaN or infinity (gradio_client refuses to send them), so they arrive as the text a number box
# or a script would send.
NAN, INF = "NaN", "inf"
HUGE_INTS = [2**31, 2**32, 2**63, 10**30, -1]
# What a visitor must never read: SQL, driver and Python internals, tracebacks, server paths.
INTERNALS = re.compile(
    r"traceback|sqlalchemy|psycopg|sqlite|insert into|select |\[sql|parameters:|File \"|"
    r"site-packages|/home/|/tmp/|/work/|invalid literal|argument must be|has no attribute|"
    r"not supported between|nonetype|too large to convert|overflow",
    re.I,
)
MAX_ACTIVE = 2


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def lab(request, tmp_path_factory, glue_dir):
    """A public server without a worker, its registry on SQLite or on a fresh PostgreSQL database + Redis."""
    tmp = tmp_path_factory.mktemp(f"abuse-{request.param}")
    home, log = tmp / "home", tmp / "serve.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MODULETUNE_")}
    env.update(
        MODULETUNE_HOME=str(home),
        MODULETUNE_GLUE_DIR=str(glue_dir),
        TOKENIZERS_PARALLELISM="false",
        GRADIO_ANALYTICS_ENABLED="False",
        MODULETUNE_PUBLIC_MAX_ACTIVE_PER_VISITOR=str(MAX_ACTIVE),
        MODULETUNE_PUBLIC_MAX_QUEUED="20",
        MODULETUNE_QUEUE_NAME=f"abuse-{uuid.uuid4().hex[:8]}",
    )
    db = None
    if request.param == "postgresql":
        import psycopg

        admin = request.getfixturevalue("postgres_server")
        db = f"moduletune_abuse_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{db}"')
        env.update(
            MODULETUNE_DB_URL=admin.rsplit("/", 1)[0] + "/" + db,
            MODULETUNE_QUEUE_URL=request.getfixturevalue("redis_server"),
        )
    port = free_port()
    app = launch(["serve", "--public", "--no-worker", "--port", str(port)], port, env, home, log)
    app.db_url = env.get("MODULETUNE_DB_URL") or f"sqlite:///{home / 'runs.db'}"
    yield app
    _stop(app.proc)
    from moduletune.tasks.registry import dispose_engines

    dispose_engines()
    if db:
        import psycopg

        with psycopg.connect(request.getfixturevalue("postgres_server"), autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')


def registry_of(lab):
    from moduletune.tasks.registry import Registry

    return Registry(lab.db_url)


def clear(lab) -> None:
    """Cancel whatever is queued, so each test starts with every visitor's quota free."""
    registry = registry_of(lab)
    for run in registry.list_runs(status="queued"):
        registry.request_cancel(run.id)


def refusal(client: Client, *args, api_name: str, **kwargs) -> str:
    """What the caller reads when the call is refused (an error raised, nothing queued, an empty preview);
    a call that was not refused fails the test."""
    try:
        out = client.predict(*args, api_name=api_name, **kwargs)
    except AppError as err:
        return str(err)
    changed = {k: v for k, v in kwargs.items() if TINY.get(k, "?") != v} or args
    if api_name == "/submit":  # (message beside the button, ids, one message beside each field ...)
        message, ids, *beside = out
        beside = [m for m in beside if isinstance(m, str) and m]
        assert ids == [] and "Nothing was queued" in message, f"{changed!r:.200} was queued: {message}"
        return beside[0] if beside else message
    if api_name == "/preview":  # (preview, one message beside each field ...)
        texts = [m for m in out if isinstance(m, str) and m]
        assert "Nothing to queue yet" in " ".join(texts), f"{changed!r:.200} previewed as valid: {texts!r:.300}"
        return next(iter(texts[1:]), texts[0])
    raise AssertionError(f"{api_name} {args!r:.200} was answered as valid: {out!r:.300}")


def assert_clean(text: str, probe) -> None:
    """One short line without internals."""
    body = text.replace("\n\nNothing was queued.", "").replace("**Nothing to queue yet.** ", "").strip()
    assert "\n" not in body, f"{probe}: more than one line: {body[:400]!r}"
    assert len(body) < 1500, f"{probe}: a {len(body):,}-character answer echoes the input"
    assert not INTERNALS.search(body), f"{probe}: internals in {body[:400]!r}"


FORM_PROBES = {
    "tasks": [None, 5, [5], ["sst2"] * 1000, [BIG], BIG, [None]],
    "model": [5, BIG, ["all-MiniLM-L6-v2"], "../../etc/passwd"],
    "families": [None, "layernorm", [BIG], [3], ["layernorm"] * 1000],
    "together": [None, "false", 1, BIG],
    "random_control": [None, "yes"],
    "layers": [None, ["99"], [BIG], ["-1"], "5", [[5]]],
    "layer_spec": ["0-999999999", "0-" + "9" * 400, BIG, [5], "each" * 100, "7"],
    "each_layer": [None, "true"],
    "lr": [NAN, INF, -1, 2, BIG, "1e-2" * 20, True],
    "seeds": [*(str(v) for v in HUGE_INTS), ",".join(map(str, range(100_000))), BIG, None, 1.5, "0,-1", "nan"],
    "max_train": [*HUGE_INTS, NAN, INF, BIG, "12abc", 1.5],
    "max_eval": [*HUGE_INTS, NAN, "abc"],
    "epochs": [*HUGE_INTS, 0, NAN, BIG, 2.5],
    "batch_size": [*HUGE_INTS, 0, NAN, "abc"],
    "train_head": [None, "false", 0, BIG],
    "prefix_cache": [None, BIG, 5],
    "lr_search": [None, "no"],
}
RUN_ID_PROBES = [*HUGE_INTS, 0, None, "abc", 1.5, NAN, True, BIG, [1]]


def test_every_malformed_value_gets_one_line_and_queues_nothing(lab):
    registry = registry_of(lab)
    client = Client(lab.url, verbose=False)
    calls = 0
    for field, values in FORM_PROBES.items():
        for value in values:
            probe = f"{field}={value!r:.60}"
            for api in ("/submit", "/preview"):
                text = refusal(
                    client, **{**TINY, "prefix_cache": "auto", "lr_search": False, field: value}, api_name=api
                )
                calls += 1
                assert_clean(text, f"{api} {probe}")
            assert registry.count() == 0, f"{probe} queued something"
    for value in RUN_ID_PROBES:
        for api, args in (
            ("/cancel", (value,)),
            ("/retry", (value,)),
            ("/run", (value,)),
            ("/classify", (value, "a sentence", "")),
        ):
            text = refusal(client, *args, api_name=api)
            calls += 1
            assert_clean(text, f"{api} {value!r:.60}")
    for args, api in (
        ((BIG, "all"), "/runs"),
        (("all", BIG), "/runs"),
        ((5, None), "/runs"),
        ((BIG,), "/compare_data"),
        ((5,), "/compare_data"),
    ):
        assert_clean(refusal(client, *args, api_name=api), f"{api} {args!r:.60}")
        calls += 1
    assert registry.count() == 0
    assert _up(lab.url + "/"), "the server went down"
    # The server kept the details for its operator, and a well-formed submit still works.
    message, ids, *_ = client.predict(**TINY, api_name="/submit")  # (message, ids, one message per field)
    assert len(ids) == 1, message
    clear(lab)
    print(f"\n{calls} malformed calls answered in one clean line each ({lab.db_url.split(':')[0]})")


def test_a_huge_sweep_is_refused_at_once_while_another_visitor_is_answered(lab):
    clear(lab)
    registry = registry_of(lab)
    everything = dict(
        TINY,
        tasks=["cola", "sst2", "mrpc", "stsb", "qqp", "mnli", "qnli", "rte", "wnli"],
        families=[
            "query",
            "key",
            "value",
            "attention_output",
            "ffn_intermediate",
            "ffn_output",
            "layernorm",
            "bias",
            "embeddings",
            "classifier",
            "full",
        ],
        random_control=True,
        each_layer=True,
        layers=["0", "1", "2", "3", "4", "5"],
        seeds=",".join(map(str, range(140))),
    )  # 9 x 99 x 140 = 124,740 runs in 500 characters
    small = dict(TINY, seeds="7")
    timings, answers = {}, {}

    def call(name, client, kwargs):
        t0 = time.monotonic()
        answers[name] = client.predict(**kwargs, api_name="/submit")
        timings[name] = time.monotonic() - t0

    attacker, other = Client(lab.url, verbose=False), Client(lab.url, verbose=False)
    call("warm", other, dict(TINY, seeds="8"))  # the model's depth and counts are cached, as on a live server
    clear(lab)
    threads = [
        threading.Thread(target=call, args=("huge", attacker, everything)),
        threading.Thread(target=call, args=("small", other, small)),
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    huge_message, huge_ids, *_ = answers["huge"]
    assert huge_ids == [] and "would queue 124,740 runs, more than 200" in huge_message, huge_message
    assert timings["huge"] < 2.0, f"the refusal took {timings['huge']:.2f}s"
    assert len(answers["small"][1]) == 1 and timings["small"] < 5.0, (answers["small"], timings)
    # A megabyte of seeds is refused by its length before it is read.
    t0 = time.monotonic()
    message = refusal(attacker, **dict(TINY, seeds=",".join(map(str, range(150_000)))), api_name="/submit")
    assert "seeds must be a number or text of at most 500 characters" in message and time.monotonic() - t0 < 3.0
    assert registry.count("queued") == 1
    print(f"\nhuge sweep refused in {timings['huge']:.3f}s; the other visitor answered in {timings['small']:.3f}s")
    clear(lab)


def test_fourteen_clients_from_one_address_share_one_visitors_quota(lab):
    clear(lab)
    registry = registry_of(lab)
    before = registry.count()
    # Each a new connection and session, and each claiming another address in X-Forwarded-For, which this
    # server (trusting no proxy) ignores.
    clients = [Client(lab.url, verbose=False, headers={"X-Forwarded-For": f"10.1.0.{i}"}) for i in range(14)]
    queued, refused = [], []
    for i, client in enumerate(clients):
        message, ids, *_ = client.predict(**dict(TINY, seeds=str(100 + i)), api_name="/submit")
        (queued if ids else refused).append(message)
    assert len(queued) == MAX_ACTIVE and len(refused) == 14 - MAX_ACTIVE
    assert all(f"at most {MAX_ACTIVE} runs queued or running per visitor" in m for m in refused), refused[0]
    assert registry.count() - before == MAX_ACTIVE
    # The owner check keys on the same identity: another connection from this address may cancel them.
    mine = [r.id for r in registry.list_runs(status="queued")]
    assert clients[-1].predict(mine[0], api_name="/cancel") == "cancelled"
    clear(lab)


def test_an_upload_is_refused(lab):
    response = httpx.post(lab.url + "/gradio_api/upload", files={"files": ("big.bin", b"0" * 20_000)}, timeout=30)
    assert response.status_code == 413, (response.status_code, response.text[:200])
    assert _up(lab.url + "/")
