"""CAP as an installed package: `pip install .` gives the `cap` and `cap-client` commands, which
run from any folder, with the page installed beside the code."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from harness.http_server import ImageHTTPServer
from harness.processes import REPO, server_env

pytestmark = pytest.mark.slow  # pip installs the package, then runs its commands


@pytest.fixture(scope="module")
def installed(tmp_path_factory) -> Path:
    """`pip install .` of a copy of the sources (so that no build folder lands in the repository), into
    a prefix of its own, from this venv's packages: no download."""
    work = tmp_path_factory.mktemp("package")
    source = work / "source"
    source.mkdir()
    shutil.copy(REPO / "pyproject.toml", source)
    for folder in ("server", "requirements"):
        shutil.copytree(REPO / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__", "*.pth", "*.pt"))
    prefix = work / "prefix"
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index",
         "--disable-pip-version-check", "--quiet", "--prefix", str(prefix), str(source)],
        capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return prefix


def run(installed: Path, command: list[str], cwd: Path) -> subprocess.CompletedProcess:
    site = next(installed.glob("lib/python3*/site-packages"))
    env = server_env(PYTHONPATH=site, COLUMNS="100")
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


def test_cap_and_cap_client_run_from_another_folder(installed, tmp_path):
    cap = run(installed, [str(installed / "bin" / "cap"), "--help"], tmp_path)
    assert cap.returncode == 0, cap.stderr
    assert cap.stdout.startswith("usage: cap [-h] {serve,audit,download-checkpoint}")
    client = run(installed, [str(installed / "bin" / "cap-client"), "--help"], tmp_path)
    assert client.returncode == 0, client.stderr
    assert client.stdout.startswith("usage: cap-client [-h] (--image IMAGE | --video VIDEO) [--frame FRAME]")


def test_the_installed_package_holds_the_page(installed, tmp_path):
    done = run(installed, [sys.executable, "-c", "import server, server.main; import server.routes as r; print(server.__file__, len(r.PAGE), sum(len(body) for body, _ in r.PAGE_FILES.values()))"], tmp_path)
    assert done.returncode == 0, done.stderr
    path, page, files = done.stdout.split()
    assert Path(path).is_relative_to(installed)  # the installed copy, not the repository's
    assert int(page) == (REPO / "server" / "page" / "index.html").stat().st_size
    page_dir = REPO / "server" / "page"
    assert int(files) == sum(f.stat().st_size for f in page_dir.iterdir() if f.suffix in (".js", ".css", ".svg")) > 0


def test_the_installed_cap_keeps_checkpoints_in_checkpoints_and_names_itself_in_what_to_run(installed, tmp_path):
    """From a fresh folder, with SAM_CHECKPOINT unset: `cap download-checkpoint` writes ./checkpoints/<official
    name> (no ./server/), and `cap` without it says to run `cap download-checkpoint`."""
    weights = os.urandom(100_000)
    name = f"sam_vit_b_{hashlib.sha256(weights).hexdigest()[:6]}.pth"
    site = next(installed.glob("lib/python3*/site-packages"))
    env = server_env(PYTHONPATH=site, SAM_MODEL_TYPE="vit_b", SAM_DEVICE="cpu")
    missing = subprocess.run([str(installed / "bin" / "cap")], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2, missing.stderr
    assert f"No SAM checkpoint at {tmp_path / 'checkpoints' / 'sam_vit_b_01ec64.pth'} " in missing.stderr
    assert "download it with `cap download-checkpoint`" in missing.stderr
    with ImageHTTPServer() as files:
        files.add(f"/{name}", weights, content_type="application/octet-stream")
        done = subprocess.run(
            [str(installed / "bin" / "cap"), "download-checkpoint", "--url", files.url(f"/{name}")],
            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
        )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth").read_bytes() == weights
    assert sorted(path.name for path in tmp_path.iterdir()) == ["checkpoints"]  # no ./server/, nor anything else
