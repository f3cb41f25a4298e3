"""The service as an operator meets it: /ping, /health, the audit command,
the README's run command, and a full-size checkpoint through the production loader."""

import datetime as dt
import functools
import json
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from harness.client import exchange
from harness.ports import free_port
from harness.processes import REPO, running, server_env
from harness.waiting import wait_for
from server import jobs
from server.models.loading import production_model_loader
from server.models.registry import MODEL_TYPES
from server.models.sam1 import SamModel
from server.store.sqlite import SQLiteStore
from tests.conftest import make_settings, ws_url
from tests.support.http_client import get

pytestmark = pytest.mark.slow  # real processes and a full-size checkpoint


http_get = functools.partial(get, timeout=5)


def test_ping_answers_while_the_model_loads_and_health_waits_for_it(start_app, tiny_sam):
    release = threading.Event()

    def slow_load():
        assert release.wait(30)
        return SamModel(tiny_sam, "tiny")

    app = start_app(load_model=slow_load, wait_ready=False)
    assert http_get(app.port, "/ping") == (200, b"pong")
    status, body = http_get(app.port, "/health")
    assert status == 503
    health = json.loads(body)
    assert health["model_loaded"] is False and health["store"] == "ok"
    assert set(health) == {
        "model_loaded", "store", "images", "images_free_mb", "queue_depth", "connections", "version", "protocol", "video"
    }
    assert health["images"] == "ok" and health["protocol"] == "1.2"

    release.set()
    assert app.processor.ready.wait(10)
    status, body = http_get(app.port, "/health")
    assert status == 200
    assert json.loads(body)["model_loaded"] is True and json.loads(body)["queue_depth"] == 0


def test_health_probes_a_write_and_says_why_while_another_connection_holds_the_file(start_app):
    """In WAL mode reads go on under another process's BEGIN EXCLUSIVE; only a write shows that nothing can be stored."""
    app = start_app()
    assert http_get(app.port, "/health")[0] == 200
    holder = sqlite3.connect(app.settings.sqlite_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        answers = []

        def red() -> bool:
            started = time.monotonic()
            answers.append((*http_get(app.port, "/health"), time.monotonic() - started))
            return answers[-1][0] == 503

        assert wait_for(red, 10, interval=0.2), f"/health stayed {answers[-1][:2]} while the file was locked"
        assert max(took for _, _, took in answers) < 5  # the probe's wait is bounded: /health never hangs
        assert json.loads(answers[-1][1])["store"].endswith("cannot be written: database is locked")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert wait_for(lambda: http_get(app.port, "/health")[0] == 200, 10, interval=0.2)


def test_unknown_paths_are_404(start_app):
    app = start_app()
    assert http_get(app.port, "/nope")[0] == 404


def broken_record(job_id: str) -> dict:
    now = dt.datetime(2026, 1, 1, tzinfo=dt.timezone.utc)
    record = jobs.new_record(
        job_id, now=now, image_url="http://x/a.png", image_sha256="0" * 64, width=1, height=1,
        boxes=[{"x": 0.0, "y": 0.0, "width": 1.0, "height": 1.0}], multimask=False,
    )
    return {**record, "status": "processed", "processed": jobs.format_time(now - dt.timedelta(seconds=5))}


def run_audit(sqlite_path: Path) -> subprocess.CompletedProcess:
    env = server_env(SQLITE_PATH=sqlite_path)
    return subprocess.run(
        [sys.executable, "-m", "server", "audit"], cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )


def test_audit_lists_broken_records_and_exits_non_zero(tmp_path):
    path = tmp_path / "audit.sqlite3"
    store = SQLiteStore(path)
    good = jobs.new_record(
        "good", now=dt.datetime.now(dt.timezone.utc), image_url="http://x/a.png", image_sha256="0" * 64,
        width=1, height=1, boxes=[], multimask=False,
    )
    store.insert(good)
    clean = run_audit(path)
    assert clean.returncode == 0, clean.stderr
    assert "audited 1 records: 0 break" in clean.stdout

    store.insert(broken_record("broken-one"))
    store.close()
    dirty = run_audit(path)
    assert dirty.returncode == 1
    assert "broken-one" in dirty.stdout and "good" not in dirty.stdout.replace("audited", "")
    assert "skip" in dirty.stdout


def test_audit_lists_records_not_terminal_past_their_time_and_exits_non_zero(tmp_path):
    path = tmp_path / "audit.sqlite3"
    store = SQLiteStore(path)
    now = dt.datetime.now(dt.timezone.utc)
    for job_id, age in (("fresh", 60), ("stuck", 3600)):
        record = jobs.new_record(
            job_id, now=now - dt.timedelta(seconds=age), image_url="http://x/a.png", image_sha256="0" * 64,
            width=1, height=1, boxes=[], multimask=False,
        )
        stored = store.insert(record)
        claimed = jobs.claim(stored, now=now, server_id="cap-dead", lease_seconds=120, max_attempts=3)
        store.replace(jobs.mark_processed(claimed, now=now), etag=stored["_etag"])
    store.close()
    audit = run_audit(path)
    assert audit.returncode == 1
    [line] = [line for line in audit.stdout.splitlines() if not line.startswith("audited")]
    assert re.match(r"stuck status=processed: still processed 36\d\d s after createdAt", line), line
    assert "JOB_TIMEOUT=600 s" in line
    assert "audited 2 records: 0 break the order invariant, 1 are not terminal past their time" in audit.stdout


# --- a full-size checkpoint with random weights (conftest.vit_b_checkpoint) -----------


def test_a_full_size_vit_b_checkpoint_serves_a_request(tmp_path, vit_b_checkpoint, image_server, start_app):
    settings = make_settings(tmp_path, sam_model_type="vit_b", sam_checkpoint=vit_b_checkpoint, sam_device="cpu")
    app = start_app(load_model=production_model_loader(settings), sam_checkpoint=vit_b_checkpoint)
    outcome = exchange(ws_url(app), {"image_url": image_server.url("/photo.jpg"), "boxes": [{"x": 10, "y": 20, "width": 100, "height": 80}]})
    assert outcome.types == ["queued", "status", "result"], outcome.messages
    result = outcome.last
    assert result["image"] == {"width": 320, "height": 240}
    assert result["masks"][0]["segmentation"]["size"] == [240, 320]
    assert app.store.get_output(result["id"])["model"] == "vit_b"
    assert app.processor.model.sam.image_encoder.img_size == 1024


# --- the README's run command ----------------------------------------------------------


def run_command_env(tmp_path: Path, **settings) -> dict:
    return server_env(HOST="127.0.0.1", SQLITE_PATH=tmp_path / "cap.sqlite3", IMAGE_DIR=tmp_path / "images", **settings)


def test_the_run_command_serves_ping_and_health(tmp_path, vit_b_checkpoint):
    """`./scripts/run`, exactly as the README says, with a full-size vit_b checkpoint."""
    port = free_port()
    env = run_command_env(tmp_path, port=port, sam_model_type="vit_b", sam_checkpoint=vit_b_checkpoint)
    log = tmp_path / "run.log"
    with log.open("w") as output, running(
        [str(REPO / "scripts" / "run")], cwd=REPO, env=env, stdout=output, stderr=subprocess.STDOUT
    ) as process:
        deadline = time.monotonic() + 240
        ping = health = None
        while time.monotonic() < deadline and process.poll() is None:
            try:
                ping = http_get(port, "/ping")
                health = http_get(port, "/health")
                if health[0] == 200:
                    break
            except OSError:  # not listening yet, reset, or slow while the model loads on a busy machine
                pass
            time.sleep(0.2)
        assert ping == (200, b"pong"), log.read_text()
        assert health is not None and health[0] == 200, (health, log.read_text())
        assert json.loads(health[1])["model_loaded"] is True
        process.send_signal(signal.SIGTERM)
        assert process.wait(60) == 0
    assert "listening on 127.0.0.1" in log.read_text(), log.read_text()


def test_the_run_command_explains_a_missing_checkpoint(tmp_path):
    missing = tmp_path / "sam_vit_l_0b3195.pth"
    env = run_command_env(tmp_path, port=free_port(), sam_model_type="vit_l", sam_checkpoint=missing)
    done = subprocess.run([str(REPO / "scripts" / "run")], cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert str(missing) in done.stderr and MODEL_TYPES["vit_l"].url in done.stderr
    assert "Traceback" not in done.stderr
