"""What stops `python -m server` from starting is one sentence on stderr and exit status 2,
never a traceback: run as the real command, one case at a time."""

import socket
import subprocess
import sys

import pytest

from harness.ports import free_port
from harness.processes import REPO, server_env
from server.models.registry import MODEL_TYPES
from tests.support.sentences import assert_one_sentence

pytestmark = pytest.mark.slow  # real `python -m server` processes


def start_server(tmp_path, cwd=REPO, **settings) -> subprocess.CompletedProcess:
    defaults = dict(HOST="127.0.0.1", SQLITE_PATH=tmp_path / "cap.sqlite3", IMAGE_DIR=tmp_path / "images",
                    SAM_MODEL_TYPE="vit_b", PYTHONPATH=REPO)
    env = server_env(**{**defaults, **settings})
    return subprocess.run([sys.executable, "-m", "server"], cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def checkpoint(tmp_path):
    """A file where SAM_CHECKPOINT points: the checks before it are what these tests reach."""
    path = tmp_path / "sam_vit_b_01ec64.pth"
    path.write_bytes(b"not read: start-up stops before the model loads")
    return path


def assert_stops_with(done: subprocess.CompletedProcess, *words: str) -> None:
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    line = done.stderr.strip()
    assert line.startswith("cap: "), done.stderr
    assert_one_sentence(line)
    for word in words:
        assert word in line, line


def test_a_port_in_use(tmp_path, checkpoint):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = start_server(tmp_path, PORT=port, SAM_CHECKPOINT=checkpoint, SAM_DEVICE="cpu")
    assert_stops_with(done, f"Port {port} is in use", "set PORT")


def test_cuda_asked_for_without_a_gpu(tmp_path, checkpoint):
    done = start_server(tmp_path, PORT=free_port(), SAM_CHECKPOINT=checkpoint, SAM_DEVICE="cuda", CUDA_VISIBLE_DEVICES="")
    assert_stops_with(done, "SAM_DEVICE=cuda", "sees no CUDA GPU", "SAM_DEVICE=auto")


def test_a_device_name_torch_does_not_know(tmp_path, checkpoint):
    done = start_server(tmp_path, PORT=free_port(), SAM_CHECKPOINT=checkpoint, SAM_DEVICE="gpu")
    assert_stops_with(done, "SAM_DEVICE='gpu' is not a device name")


def test_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "sam_vit_b_01ec64.pth"
    done = start_server(tmp_path, PORT=free_port(), SAM_CHECKPOINT=missing, SAM_DEVICE="cpu")
    assert_stops_with(done, str(missing), MODEL_TYPES["vit_b"].url, "`./scripts/run download-checkpoint`")


def test_a_missing_checkpoint_outside_a_clone_is_looked_for_in_checkpoints_and_names_python_m_server(tmp_path):
    """Run from another folder (as the Docker image's command is, or a module on PYTHONPATH): no ./scripts/run there."""
    done = start_server(tmp_path, cwd=tmp_path, PORT=free_port(), SAM_DEVICE="cpu")
    expected = tmp_path / "checkpoints" / "sam_vit_b_01ec64.pth"
    assert_stops_with(done, f"No SAM checkpoint at {expected} ", "`python -m server download-checkpoint`")


def test_a_sqlite_path_that_cannot_be_created(tmp_path, checkpoint):
    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("")
    done = start_server(tmp_path, PORT=free_port(), SAM_CHECKPOINT=checkpoint, SAM_DEVICE="cpu",
                        SQLITE_PATH=not_a_folder / "cap.sqlite3")
    assert_stops_with(done, "Cannot open the SQLite store", "SQLITE_PATH")


def test_cosmos_endpoint_without_a_key(tmp_path, checkpoint):
    done = start_server(tmp_path, PORT=free_port(), SAM_CHECKPOINT=checkpoint, SAM_DEVICE="cpu",
                        COSMOS_ENDPOINT="https://127.0.0.1:9/")
    assert_stops_with(done, "COSMOS_KEY")


def test_a_bad_setting(tmp_path):
    assert_stops_with(start_server(tmp_path, PORT="eighty"), "PORT='eighty' is not valid: set it to a whole number")


def test_a_corrupt_checkpoint_ends_with_one_sentence(tmp_path, checkpoint):
    """Found while loading, after start-up: the log lines come first, the sentence last."""
    done = start_server(tmp_path, PORT=free_port(), SAM_CHECKPOINT=checkpoint, SAM_DEVICE="cpu")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("cap: ") and str(checkpoint) in last and MODEL_TYPES["vit_b"].url in last, done.stderr
    assert "it is not a complete PyTorch checkpoint" in last
    assert_one_sentence(last)
