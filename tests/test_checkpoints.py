"""`python -m server download-checkpoint`, run as a command against a real local HTTP server."""

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.http_server import ImageHTTPServer
from harness.ports import free_port
from harness.processes import REPO, server_env
from server.__main__ import main
from server.models.registry import MODEL_TYPES
from tests.support.sentences import assert_one_sentence

WEIGHTS = os.urandom(3 * 1024 * 1024 + 17)  # a few chunks, and a partial one
NAME = f"sam_vit_b_{hashlib.sha256(WEIGHTS).hexdigest()[:6]}.pth"  # the official naming, for these bytes


@pytest.fixture
def files():
    with ImageHTTPServer() as server:
        yield server


def download(tmp_path: Path, url: str, *args: str, model_type: str = "vit_b") -> subprocess.CompletedProcess:
    env = server_env(PYTHONPATH=REPO, SAM_MODEL_TYPE=model_type, SAM_CHECKPOINT=tmp_path / "checkpoints" / "sam.pth")
    return subprocess.run(
        [sys.executable, "-m", "server", "download-checkpoint", *args, "--url", url],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )


def left_in(tmp_path: Path) -> list[str]:
    folder = tmp_path / "checkpoints"
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def test_a_good_file_is_verified_and_renamed_into_place(tmp_path, files):
    files.add(f"/{NAME}", WEIGHTS, content_type="application/octet-stream")
    done = download(tmp_path, files.url(f"/{NAME}"), "vit_b")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "checkpoints" / "sam.pth").read_bytes() == WEIGHTS
    assert left_in(tmp_path) == ["sam.pth"]  # no temporary file left behind
    assert (tmp_path / "checkpoints" / "sam.pth").stat().st_mode & 0o777 == 0o644
    assert "100%" in done.stderr and "verified" in done.stderr

    again = download(tmp_path, files.url(f"/{NAME}"))
    assert again.returncode == 0 and "already there" in again.stderr
    assert files.hits[f"/{NAME}"] == 1  # a verified file is not downloaded twice


def test_a_corrupt_file_leaves_nothing_and_says_so(tmp_path, files):
    corrupt = bytearray(WEIGHTS)
    corrupt[1000] ^= 0xFF
    files.add(f"/{NAME}", bytes(corrupt), content_type="application/octet-stream")
    done = download(tmp_path, files.url(f"/{NAME}"))
    assert done.returncode == 1
    assert "corrupt" in done.stderr and "nothing was written" in done.stderr
    assert left_in(tmp_path) == []


def test_an_interrupted_download_leaves_nothing_and_says_so(tmp_path, files):
    # The server promises the whole file, sends half and closes the connection.
    files.add(f"/{NAME}", WEIGHTS[: len(WEIGHTS) // 2], headers={"Content-Length": str(len(WEIGHTS))})
    done = download(tmp_path, files.url(f"/{NAME}"))
    assert done.returncode == 1
    assert "nothing was written" in done.stderr and "Traceback" not in done.stderr
    assert left_in(tmp_path) == []


def test_a_file_name_without_a_hash_prefix_is_refused_before_downloading(tmp_path, files):
    files.add("/sam_vit_b.pth", WEIGHTS)
    done = download(tmp_path, files.url("/sam_vit_b.pth"))
    assert done.returncode == 1 and "cannot be verified" in done.stderr
    assert files.hits["/sam_vit_b.pth"] == 0 and left_in(tmp_path) == []


def test_a_folder_it_cannot_write_is_one_sentence_not_a_traceback(tmp_path, files):
    files.add(f"/{NAME}", WEIGHTS, content_type="application/octet-stream")
    (tmp_path / "checkpoints").write_text("a file where the checkpoint's folder should be")
    done = download(tmp_path, files.url(f"/{NAME}"))
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.splitlines()[-1].startswith(f"cap: cannot write {tmp_path / 'checkpoints' / 'sam.pth'}")


def test_a_model_type_other_than_the_settings_is_refused_with_what_to_set(tmp_path, files):
    done = download(tmp_path, files.url(f"/{NAME}"), "vit_b", model_type="vit_h")
    assert done.returncode == 2
    # The file goes beside the configured one (in Docker, /checkpoints: server/ is not writable there).
    beside = tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth"
    assert f"SAM_MODEL_TYPE=vit_b and SAM_CHECKPOINT={beside} " in done.stderr
    assert files.hits[f"/{NAME}"] == 0


def test_a_sam2_file_carries_no_hash_so_it_is_verified_by_loading_it_as_the_model(tmp_path, files, hiera_t_checkpoint):
    weights = hiera_t_checkpoint.read_bytes()
    files.add("/sam2.1_hiera_tiny.pt", weights, content_type="application/octet-stream")
    done = download(tmp_path, files.url("/sam2.1_hiera_tiny.pt"), model_type="sam2.1_hiera_t")
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "checkpoints" / "sam.pth").read_bytes() == weights and left_in(tmp_path) == ["sam.pth"]
    assert f"sha256 {hashlib.sha256(weights).hexdigest()}" in done.stderr  # to compare with a hash one trusts
    assert "it loads as the model" in done.stderr


@pytest.mark.parametrize("content", ["sam1_weights", "truncated"])
def test_a_sam2_file_that_does_not_load_as_the_model_leaves_nothing(tmp_path, files, hiera_t_checkpoint, tiny_checkpoint, content):
    body = tiny_checkpoint.read_bytes() if content == "sam1_weights" else hiera_t_checkpoint.read_bytes()[:1_000_000]
    files.add("/sam2.1_hiera_tiny.pt", body, content_type="application/octet-stream")
    done = download(tmp_path, files.url("/sam2.1_hiera_tiny.pt"), model_type="sam2.1_hiera_t")
    assert done.returncode == 1 and "Traceback" not in done.stderr, done.stderr
    assert "does not load as a sam2.1_hiera_t model" in done.stderr and "nothing was written" in done.stderr
    assert left_in(tmp_path) == []


# --- offline, and where the file goes by default ------------------------------------------------


def assert_says_how_to_do_without_the_network(stderr: str, target: Path, command: str) -> None:
    """Not urllib3's nested exceptions and "Try again": a mirror with --url, or the file copied in, and where."""
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("cap: Cannot reach ") and "Traceback" not in stderr, stderr
    assert "Error" not in last and "Max retries" not in last and "Try again" not in last, last
    vit_b = MODEL_TYPES["vit_b"]
    assert f"download {vit_b.url} where there is internet access and copy it to {target.resolve()}," in last
    assert f"`{command} --url URL` with a mirror's copy of sam_vit_b_01ec64.pth." in last
    assert_one_sentence(last)


def test_offline_a_refused_connection_says_how_to_use_a_mirror_or_copy_the_file_in(tmp_path):
    closed = f"http://127.0.0.1:{free_port()}/{NAME}"  # nothing listens there
    done = download(tmp_path, closed)
    assert done.returncode == 1
    assert "(the connection was refused)" in done.stderr
    assert_says_how_to_do_without_the_network(done.stderr, tmp_path / "checkpoints" / "sam.pth", "python -m server download-checkpoint")
    assert left_in(tmp_path) == []


def test_offline_a_name_that_does_not_resolve_says_so_and_what_to_do(tmp_path, resolver, monkeypatch, capsys):
    """In this process, so that the resolver fixture can make the name fail as it does without DNS."""
    resolver["mirror.example"] = None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(sys, "argv", ["cap", "download-checkpoint"])  # as the installed command
    monkeypatch.setenv("SAM_MODEL_TYPE", "vit_b")
    monkeypatch.delenv("SAM_CHECKPOINT", raising=False)
    assert main(["download-checkpoint", "--url", f"http://mirror.example/{NAME}"]) == 1
    stderr = capsys.readouterr().err
    assert "Cannot reach mirror.example" in stderr and "(the name does not resolve: no network, or no DNS)" in stderr
    assert_says_how_to_do_without_the_network(stderr, Path("checkpoints/sam_vit_b_01ec64.pth"), "cap download-checkpoint")
    assert resolver.lookups == ["mirror.example"]


def test_outside_a_clone_the_checkpoint_goes_to_checkpoints_not_server(tmp_path, files):
    """SAM_CHECKPOINT unset and the working folder not CAP's own: ./checkpoints/, and no ./server/ created."""
    files.add(f"/{NAME}", WEIGHTS, content_type="application/octet-stream")
    env = server_env(PYTHONPATH=REPO, SAM_MODEL_TYPE="vit_b")
    done = subprocess.run(
        [sys.executable, "-m", "server", "download-checkpoint", "--url", files.url(f"/{NAME}")],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth").read_bytes() == WEIGHTS
    assert not (tmp_path / "server").exists()
