"""IMAGE_DIR against a disk-filling client and at scale (issue 19, findings 3, 4 and 13), through real servers,
real sockets and real files: images kept by content, files of unprocessed requests gone soon, a free-space
floor, junk-laden files refused, lookups by hash that list no folder, housekeeping off the model's thread,
and a gauge of IMAGE_DIR's bytes. Nothing here knows the folder layout: files are found by their content.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import logging
import os
import shutil
import statistics
import struct
import sys
import threading
import uuid
import zlib
from pathlib import Path

from harness import image_files as files
from harness.client import exchange, session as open_session
from harness.waiting import wait_for
from server import jobs
from server.clock import utcnow
from server.store.sqlite import SQLiteStore
from tests.conftest import ws_url
from tests.test_hardening import http_get
from tests.test_metrics import scrape

BOX = {"x": 2, "y": 2, "width": 12, "height": 10}
CLICK = {"points": [{"x": 10, "y": 8, "label": 1}]}
PNG = files.png_rgb(64, 48)  # the same bytes as the image server's /rgb.png
SHA = hashlib.sha256(PNG).hexdigest()


def data_url(data: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(data).decode()


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def files_under(folder: Path) -> dict[Path, bytes]:
    """Every file under `folder`, whatever the layout, with its bytes (one the server deletes meanwhile left out)."""
    found = {}
    for parent, _, names in os.walk(folder):
        for name in names:
            path = Path(parent) / name
            with contextlib.suppress(FileNotFoundError):
                found[path] = path.read_bytes()
    return found


def contents(folder: Path) -> list[str]:
    """The SHA-256 of each file under `folder`, sorted."""
    return sorted(sha256(data) for data in files_under(folder).values())


def png_with_junk(png: bytes, size: int) -> bytes:
    """`png` with a private ancillary chunk of `size` random bytes after its header, which decoders skip."""
    body = os.urandom(size)
    chunk = struct.pack(">I", size) + b"juNk" + body + struct.pack(">I", zlib.crc32(b"juNk" + body))
    header_end = 8 + 4 + 4 + 13 + 4  # signature, then IHDR: length, type, 13 bytes, CRC
    return png[:header_end] + chunk + png[header_end:]


def all_terminal(app) -> bool:
    return all(jobs.is_terminal(record) for record in app.store.records())


# --- finding 3: junk, the floor, and files of requests that end unprocessed ------------------------------


def test_a_file_far_larger_than_its_pixels_is_refused_and_never_kept(start_app):
    app = start_app()
    junk = png_with_junk(files.png_rgb(1, 1), 3 * 2**20)  # the attack's 1x1 PNG, with 3 MB of junk, not 19
    outcome = exchange(ws_url(app), {"image_url": data_url(junk), "boxes": [{"x": 0, "y": 0, "width": 1, "height": 1}]})
    assert outcome.last["code"] == "image_too_large" and "1x1 pixels" in outcome.last["message"], outcome.last
    assert list(app.store.records()) == [] and files_under(app.settings.image_dir) == {}
    # Metadata within the allowance (1 MiB over 8 bytes a pixel) is an image like any other.
    fine = png_with_junk(PNG, 200_000)
    assert exchange(ws_url(app), {"image_url": data_url(fine), "boxes": [BOX]}).types == ["queued", "status", "result"]
    assert wait_for(lambda: contents(app.settings.image_dir) == [sha256(fine)])


def test_below_min_free_disk_mb_a_new_image_is_refused_and_health_says_so(start_app, tmp_path):
    first = start_app()
    assert exchange(ws_url(first), {"image_url": data_url(PNG), "prompts": []}).last["type"] == "result"
    # A second server on the same store and IMAGE_DIR, whose floor is far above what the disk has free.
    free_mb = shutil.disk_usage(tmp_path).free // 2**20
    app = start_app(min_free_disk_mb=free_mb + 10_000)
    other = files.png_rgb(40, 30)
    outcome = exchange(ws_url(app), {"image_url": data_url(other), "boxes": [BOX]})
    assert outcome.last["code"] == "store_unavailable" and outcome.close_code == 1013
    assert "MIN_FREE_DISK_MB" in outcome.last["message"]
    assert len(list(app.store.records())) == 1 and contents(app.settings.image_dir) == [SHA]
    # An image the server already keeps is no new file: a request by its hash is served (from the file:
    # this server's embedding cache is empty).
    by_hash = exchange(ws_url(app), {"image_sha256": SHA, "prompts": [CLICK]})
    assert by_hash.types == ["queued", "status", "result"] and by_hash.last["cached_embedding"] is False
    status, body = http_get(app.port, "/health")
    health = json.loads(body)
    assert status == 503 and health["images"].startswith("error:") and "MIN_FREE_DISK_MB" in health["images"]
    assert abs(health["images_free_mb"] - free_mb) < 5_000
    assert json.loads(http_get(first.port, "/health")[1])["images"] == "ok"


def test_superseded_inline_images_are_deleted_within_seconds(start_app, gate, image_server):
    app = start_app(model=gate)
    blocking = {"image_url": image_server.url("/rgb.png"), "boxes": [BOX]}
    blocker = threading.Thread(target=exchange, args=(ws_url(app), blocking))
    blocker.start()
    assert gate.entered.wait(10)  # the model is busy: every request of the session below waits, and is superseded
    sent = [files.noise_png(24, 16, seed=n) for n in range(100)]
    with open_session(ws_url(app)) as session:
        for n, data in enumerate(sent):
            session.send({"keep_open": True, "image_url": data_url(data), "prompts": [], "client_ref": str(n)})
        codes = []
        while len(codes) < 99:
            message = session.next()
            if message["type"] == "error":
                codes.append(message["code"])
        assert set(codes) == {"superseded"}
        gate.opened.set()
        assert session.answer()[-1]["type"] == "result"
    blocker.join(30)
    kept = sorted([SHA, sha256(sent[-1])])
    assert wait_for(lambda: contents(app.settings.image_dir) == kept, timeout=15), len(contents(app.settings.image_dir))
    assert wait_for(lambda: all_terminal(app))


# --- finding 4: no name per request, no listing per lookup, no sweep on the model's thread --------------


def test_a_thousand_superseded_clicks_by_hash_leave_the_one_file_of_their_image(start_app, gate):
    app = start_app(model=gate)
    gate.opened.set()
    with open_session(ws_url(app)) as session:
        assert session.ask({"image_url": data_url(PNG), "prompts": []})["image"]["sha256"] == SHA
        gate.opened.clear()  # the first click is held in the model while the others arrive
        for n in range(1000):
            session.send({"keep_open": True, "image_sha256": SHA, "prompts": [CLICK], "client_ref": f"c{n}"})
        superseded = 0
        while superseded < 999:
            message = session.next()
            superseded += message["type"] == "error" and message["code"] == "superseded"
        gate.opened.set()
        assert session.answer()[-1]["client_ref"] == "c999"
    assert wait_for(lambda: all_terminal(app), timeout=20)
    assert len(list(app.store.records())) == 1001
    assert [sha256(data) for data in files_under(app.settings.image_dir).values()] == [SHA]


class FolderListings:
    """Every folder listing under one folder, by thread name, seen through Python's audit events (no patching)."""

    EVENTS = frozenset({"os.scandir", "os.listdir", "glob.glob"})
    installed: "FolderListings | None" = None
    hooked = False

    def __init__(self, folder: Path):
        self.folder = str(folder)
        self.seen: list[tuple[str, str, str]] = []
        if not FolderListings.hooked:  # an audit hook stays for the process: one, heard by the newest listener
            sys.addaudithook(FolderListings._hear)
            FolderListings.hooked = True
        FolderListings.installed = self

    @staticmethod
    def _hear(event: str, args: tuple) -> None:
        listener = FolderListings.installed
        if listener is None or event not in FolderListings.EVENTS or not args:
            return
        if isinstance(args[0], (str, os.PathLike)) and os.fspath(args[0]).startswith(listener.folder):
            listener.seen.append((threading.current_thread().name, event, os.fspath(args[0])))


def test_a_request_by_hash_lists_no_folder_even_among_20000_files(start_app):
    app = start_app(embedding_cache_size=0)  # every click reads the image's file again
    with open_session(ws_url(app)) as session:
        assert session.ask({"image_url": data_url(PNG), "prompts": []})["type"] == "result"
        for _ in range(7):  # eight records of the image, as many as a lookup by hash looks at
            assert session.ask({"image_sha256": SHA, "prompts": [CLICK]})["type"] == "result"
        image_dir = app.settings.image_dir
        for n in range(20_000):
            (image_dir / f".crowd-{n}").touch()
        listings = FolderListings(image_dir)
        timings = []
        for _ in range(5):
            result = session.ask({"image_sha256": SHA, "prompts": [CLICK]})
            assert result["type"] == "result" and result["cached_embedding"] is False
            timings.append(result["timings"]["download_ms"])
    FolderListings.installed = None
    assert [seen for seen in listings.seen if seen[0] != "sweeper"] == []
    assert statistics.median(timings) < 50, timings  # reading and hashing 9 kB; a listing of 20,000 names took longer


def test_housekeeping_goes_on_while_the_model_is_busy_and_never_on_its_thread(start_app, gate, image_server, caplog):
    caplog.set_level(logging.INFO)
    app = start_app(model=gate, image_retention_hours=1 / 3600, job_timeout=3)
    gate.opened.set()
    assert exchange(ws_url(app), {"image_url": image_server.url("/rgb.png"), "boxes": [BOX]}).last["type"] == "result"
    gate.opened.clear()
    gate.entered.clear()
    outcomes = []
    photo = {"image_url": image_server.url("/photo.jpg"), "boxes": [BOX]}
    held = threading.Thread(target=lambda: outcomes.append(exchange(ws_url(app), photo)))
    held.start()
    assert gate.entered.wait(10)
    # The processor is inside the model: the first image passes its retention of 1 s and is deleted, and
    # the held request passes JOB_TIMEOUT and is ended, all the same.
    assert wait_for(lambda: SHA not in contents(app.settings.image_dir), timeout=15)
    assert wait_for(lambda: bool(outcomes), timeout=15) and outcomes[0].last["code"] == "job_timeout"
    assert gate.entered.is_set() and not gate.opened.is_set()  # still inside the model all along
    gate.opened.set()
    held.join(30)
    sweeps = [r for r in caplog.records if "by the sweep" in r.getMessage() or "past their time" in r.getMessage()]
    assert {r.threadName for r in sweeps} == {"sweeper"}, [(r.threadName, r.getMessage()) for r in sweeps]
    assert len(sweeps) >= 2


# --- earlier versions' files, and finding 13: a gauge of IMAGE_DIR's bytes --------------------------------


def test_image_files_of_earlier_versions_are_moved_to_their_hash_and_still_serve_requests(start_app, tmp_path):
    store = SQLiteStore(tmp_path / "cap.sqlite3")
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    names = []
    for _ in range(2):  # the request that brought it, and a request by hash, which linked it under its own name
        job_id = str(uuid.uuid4())
        record = jobs.new_record(
            job_id, now=utcnow(), image_url="data:image/png;base64,... (sent inline)", image_sha256=SHA,
            width=64, height=48, boxes=[], multimask=False, prompts=[],
        )
        store.insert(jobs.interrupt(record, now=utcnow()))
        names.append(f"{job_id}.png")
    (image_dir / names[0]).write_bytes(PNG)
    os.link(image_dir / names[0], image_dir / names[1])
    app = start_app(store=store)
    assert wait_for(lambda: not any((image_dir / name).exists() for name in names))
    assert exchange(ws_url(app), {"image_sha256": SHA, "prompts": [CLICK]}).last["type"] == "result"
    assert [sha256(data) for data in files_under(image_dir).values()] == [SHA]


def test_image_dir_bytes_are_a_gauge_kept_as_files_come_and_go(start_app, gate, tmp_path, image_server):
    image_dir = tmp_path / "images"
    image_dir.mkdir()
    (image_dir / f"{uuid.uuid4()}.png").write_bytes(files.png_rgb(30, 20))  # an earlier version's file
    (image_dir / "notes.txt").write_bytes(b"anything under IMAGE_DIR counts" * 100)
    app = start_app(model=gate)
    gate.opened.set()
    assert exchange(ws_url(app), {"image_url": data_url(PNG), "boxes": [BOX]}).last["type"] == "result"

    def gauge_matches() -> bool:
        samples, on_disk = scrape(app), files_under(image_dir)
        return (samples[("cap_image_dir_bytes", ())], samples[("cap_image_dir_files", ())]) == (
            sum(len(data) for data in on_disk.values()), len(on_disk)
        )

    assert wait_for(gauge_matches)
    gate.opened.clear()
    gate.entered.clear()
    blocking = {"image_url": image_server.url("/photo.jpg"), "boxes": [BOX]}
    blocker = threading.Thread(target=exchange, args=(ws_url(app), blocking))
    blocker.start()
    assert gate.entered.wait(10)
    with open_session(ws_url(app)) as session:  # a file written, then deleted once its request is superseded
        session.send({"keep_open": True, "image_url": data_url(files.noise_png(20, 20)), "prompts": []})
        assert session.next()["type"] == "queued"
        assert wait_for(lambda: len(files_under(image_dir)) == 5 and gauge_matches())
        session.send({"keep_open": True, "image_sha256": SHA, "prompts": [CLICK]})
        assert session.answer()[-1]["code"] == "superseded"
        gate.opened.set()
        assert session.answer()[-1]["type"] == "result"
    blocker.join(30)
    assert wait_for(lambda: len(files_under(image_dir)) == 4 and gauge_matches()), len(files_under(image_dir))
    assert sha256(files.noise_png(20, 20)) not in contents(image_dir)
