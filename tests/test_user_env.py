"""Tests never read the user's `.env`: with a hostile one in the repository root, the servers
the tests start run on their own settings. The user's own `.env`, if any, is put back untouched."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from harness.client import exchange
from harness.processes import REPO, server_env
from server.config import ENV_FILE_VARIABLE

pytestmark = pytest.mark.slow  # real server processes

HOSTILE = "PORT=9\nAPI_TOKEN=hostile-token\nSAM_MODEL_TYPE=vit_h\n"


@pytest.fixture
def hostile_dotenv():
    """A hostile `.env` in the repository root; the user's, if there is one, is moved aside and back."""
    dotenv, aside = REPO / ".env", REPO / ".env.cap-test-aside"
    assert not aside.exists(), f"{aside} is left from an interrupted test run: it holds your .env; move it back"
    had_one = dotenv.exists()
    if had_one:
        os.replace(dotenv, aside)
    try:
        dotenv.write_text(HOSTILE)
        yield dotenv
    finally:
        dotenv.unlink(missing_ok=True)
        if had_one:
            os.replace(aside, dotenv)


def test_the_hostile_dotenv_is_one_a_server_would_read(hostile_dotenv):
    """Without CAP_ENV_FILE, the settings come from it: so the test below proves something."""
    env = {k: v for k, v in server_env().items() if k != ENV_FILE_VARIABLE}
    done = subprocess.run(
        [sys.executable, "-c", "from server.config import Settings; s = Settings.from_env(); print(s.port, s.api_token)"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60,
    )
    assert done.stdout.split() == ["9", "hostile-token"], done.stderr


def test_servers_started_by_tests_ignore_the_users_dotenv(hostile_dotenv, start_replica, tiny_checkpoint, tmp_path, image_server):
    server = start_replica(tmp_path / "server", sam_checkpoint=tiny_checkpoint)
    server.wait_healthy()
    with urllib.request.urlopen(f"http://127.0.0.1:{server.port}/health", timeout=5) as response:
        health = json.load(response)
    assert health["model_loaded"] is True  # details without a token: API_TOKEN was not read
    outcome = exchange(server.url, {"image_url": image_server.url("/photo.jpg"), "boxes": [{"x": 1, "y": 1, "width": 9, "height": 9}]})
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    assert "model ready: vit_b" in server.log  # not SAM_MODEL_TYPE=vit_h from the file
