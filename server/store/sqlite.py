"""The embedded store: one SQLite file, for a laptop or a single server.

Columns carry the record's camelCase fields; lists and objects are JSON text.
`_etag` is a random version string replaced on every write, and updates are
`UPDATE … WHERE id = ? AND _etag = ?`, the stand-in for Cosmos DB's
If-Match. WAL mode, and each statement on a connection no other thread is
using, keep the file consistent under concurrent connection threads, the
processor thread and other processes sharing the file.

Connections are pooled, not kept per thread: every WebSocket connection
runs on a thread of its own, and opening a connection (with its pragmas)
cost each request about half a millisecond before its first query. A
statement takes an idle connection (or opens one), runs and reads all its
rows, and gives the connection back; at most MAX_IDLE_CONNECTIONS wait idle.

Each server also holds a shared `flock` on `<SQLITE_PATH>.lock` while it
runs, so that a server starting can tell whether it is the only one on the
file (`register_server`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import sqlite3
import threading
import uuid
import weakref
from pathlib import Path
from typing import BinaryIO, Iterator

from server import jobs
from server.clock import utcnow
from server.store.base import Conflict, ItemTooLarge, Record, Store, StoreUnavailable

log = logging.getLogger(__name__)

# How long a write waits for another connection's lock: long for the work
# (a busy moment passes), short for /health's probe (it must answer).
BUSY_TIMEOUT_SECONDS = 30
CHECK_TIMEOUT_SECONDS = 2
# Idle connections kept for the next statement; more than this many at once are closed as they are given back.
MAX_IDLE_CONNECTIONS = 8

# Column name -> True when the value is stored as JSON text.
QUEUE_COLUMNS = {
    "id": False, "uuid": False, "status": False, "createdAt": False,
    "processing": False, "processed": False, "finished": False,
    "interrupted": False, "failed": False, "error": True,
    "boxes": True, "prompts": True, "output": True, "multimask": False, "imageUrl": False, "imageSha256": False,
    "width": False, "height": False, "attempts": False, "leaseUntil": False,
    "serverId": False, "preferredServer": False, "scope": False, "resultBytes": False, "waiterLeaseUntil": False,
    "progress": True, "video": True, "client": False, "everything": True, "maskScale": False,
}
OUTPUT_COLUMNS = {
    "id": False, "masks": True, "model": False, "createdAt": False, "timings": True, "cachedEmbedding": False,
    "video": True,
}

SCHEMA = """
CREATE TABLE IF NOT EXISTS Queue (
    id TEXT PRIMARY KEY, uuid TEXT NOT NULL, status TEXT NOT NULL,
    createdAt TEXT NOT NULL, processing TEXT, processed TEXT, finished TEXT,
    interrupted TEXT, failed TEXT, error TEXT, boxes TEXT NOT NULL, prompts TEXT, output TEXT,
    multimask INTEGER NOT NULL, imageUrl TEXT NOT NULL, imageSha256 TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, attempts INTEGER NOT NULL,
    leaseUntil TEXT, serverId TEXT, preferredServer TEXT, scope TEXT, resultBytes INTEGER, waiterLeaseUntil TEXT,
    progress TEXT, video TEXT, client TEXT, everything TEXT, maskScale REAL, _etag TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS Queue_status_createdAt ON Queue (status, createdAt);
CREATE INDEX IF NOT EXISTS Queue_imageSha256 ON Queue (imageSha256, createdAt);
CREATE TABLE IF NOT EXISTS SAMOutput (
    id TEXT PRIMARY KEY, masks TEXT NOT NULL, model TEXT NOT NULL,
    createdAt TEXT NOT NULL, timings TEXT NOT NULL, cachedEmbedding INTEGER NOT NULL DEFAULT 0, video TEXT,
    _etag TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS Health (id TEXT PRIMARY KEY, checkedAt TEXT NOT NULL);
"""
# Columns added after a release, for files created before it: (table, column, definition).
ADDED_COLUMNS = [
    ("SAMOutput", "cachedEmbedding", "INTEGER NOT NULL DEFAULT 0"),
    ("Queue", "prompts", "TEXT"),
    ("Queue", "output", "TEXT"),
    ("Queue", "preferredServer", "TEXT"),
    ("Queue", "scope", "TEXT"),
    ("Queue", "resultBytes", "INTEGER"),
    ("Queue", "waiterLeaseUntil", "TEXT"),
    ("Queue", "progress", "TEXT"),
    ("Queue", "video", "TEXT"),
    ("SAMOutput", "video", "TEXT"),
    ("Queue", "everything", "TEXT"),
    ("Queue", "maskScale", "REAL"),
    ("Queue", "client", "TEXT"),
]


class _Connection(sqlite3.Connection):
    """A connection that a WeakSet can track, so that `close` reaches one in use, and a dropped one is freed."""


def _new_etag() -> str:
    return uuid.uuid4().hex


def _to_row(document: Record, columns: dict[str, bool]) -> list:
    return [json.dumps(document[c]) if is_json else document[c] for c, is_json in columns.items()]


def _from_row(row: sqlite3.Row, columns: dict[str, bool]) -> Record:
    document = {c: (json.loads(row[c]) if is_json and row[c] is not None else row[c])
                for c, is_json in columns.items()}
    document["_etag"] = row["_etag"]
    return document


def _record(row: sqlite3.Row) -> Record:
    record = _from_row(row, QUEUE_COLUMNS)
    record["multimask"] = bool(record["multimask"])
    return record


class SQLiteStore(Store):
    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._pool_lock = threading.Lock()
        self._idle: list[_Connection] = []
        self._connections: weakref.WeakSet[_Connection] = weakref.WeakSet()  # idle or in use: what `close` closes
        self._closed = False
        self._server_lock: BinaryIO | None = None
        with self._connection() as db:
            db.executescript(SCHEMA)
            for table, column, definition in ADDED_COLUMNS:
                if column not in {row["name"] for row in db.execute(f"PRAGMA table_info({table})")}:
                    db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {definition}")

    @contextlib.contextmanager
    def _connection(self) -> Iterator[_Connection]:
        """A connection no other thread uses until the block ends (an idle one, else a new one); then idle again.
        Refused once the store is closed (sqlite3.ProgrammingError, so `StoreUnavailable` to the caller): a closed
        store does not answer.

        One whose block raised (a sqlite3 error, or a streamed query left unfinished) is closed, not kept:
        whatever state it was left in goes with it.
        """
        with self._pool_lock:
            if self._closed:
                raise sqlite3.ProgrammingError("the store is closed")
            db = self._idle.pop() if self._idle else None
        if db is None:
            db = self._connect()
        try:
            yield db
        except BaseException:
            db.close()
            raise
        with self._pool_lock:
            if not self._closed and len(self._idle) < MAX_IDLE_CONNECTIONS:
                self._idle.append(db)
                return
        db.close()

    def _connect(self) -> _Connection:
        db = sqlite3.connect(
            self.path, timeout=BUSY_TIMEOUT_SECONDS, isolation_level=None, check_same_thread=False, factory=_Connection
        )
        db.row_factory = sqlite3.Row
        try:
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
        except BaseException:
            db.close()
            raise
        with self._pool_lock:
            self._connections.add(db)
        return db

    def _execute(self, sql: str, params=()) -> tuple[list[sqlite3.Row], int]:
        """Run one statement: its rows, all read, and how many rows it changed."""
        try:
            with self._connection() as db:
                cursor = db.execute(sql, params)
                return cursor.fetchall(), cursor.rowcount
        except sqlite3.Error as exc:
            if getattr(exc, "sqlite_errorname", None) == "SQLITE_TOOBIG":  # a value over SQLITE_LIMIT_LENGTH (1 GB)
                raise ItemTooLarge(f"SQLite {self.path}: {exc}") from exc
            raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc

    # --- Queue -----------------------------------------------------------------

    def insert(self, record: Record) -> Record:
        stored = {**record, "_etag": _new_etag()}
        names = list(QUEUE_COLUMNS) + ["_etag"]
        self._execute(
            f"INSERT INTO Queue ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            _to_row(stored, QUEUE_COLUMNS) + [stored["_etag"]],
        )
        return stored

    def get(self, job_id: str) -> Record | None:
        rows, _ = self._execute("SELECT * FROM Queue WHERE id = ?", (job_id,))
        return _record(rows[0]) if rows else None

    def replace(self, record: Record, *, etag: str) -> Record:
        stored = {**record, "_etag": _new_etag()}
        names = [c for c in QUEUE_COLUMNS if c != "id"]
        values = [v for c, v in zip(QUEUE_COLUMNS, _to_row(stored, QUEUE_COLUMNS)) if c != "id"]
        _, changed = self._execute(
            f"UPDATE Queue SET {', '.join(f'{n} = ?' for n in names)}, _etag = ? "
            "WHERE id = ? AND _etag = ?",
            values + [stored["_etag"], record["id"], etag],
        )
        if changed != 1:
            raise Conflict(f"record {record['id']} changed since it was read")
        return stored

    def claimable(self, now: dt.datetime, limit: int, after: str | None = None) -> list[Record]:
        rows, _ = self._execute(
            "SELECT * FROM Queue WHERE (status = ? OR (status = ? AND leaseUntil <= ?)) AND createdAt > ? "
            "ORDER BY createdAt, id LIMIT ?",
            (jobs.QUEUED, jobs.PROCESSING, jobs.format_time(now), after or "", limit),
        )
        return [_record(row) for row in rows]

    def with_image(self, sha256: str, limit: int, scope: str | None) -> list[Record]:
        rows, _ = self._execute(
            "SELECT * FROM Queue WHERE imageSha256 = ? AND scope IS ? ORDER BY createdAt DESC LIMIT ?",
            (sha256, scope, limit),
        )
        return [_record(row) for row in rows]

    def count_queued(self) -> int:
        rows, _ = self._execute("SELECT COUNT(*) FROM Queue WHERE status = ?", (jobs.QUEUED,))
        return rows[0][0]

    def unfinished_before(self, cutoff: dt.datetime) -> list[Record]:
        placeholders = ", ".join("?" * len(jobs.TERMINAL))
        rows, _ = self._execute(
            f"SELECT * FROM Queue WHERE status NOT IN ({placeholders}) AND createdAt < ? ORDER BY createdAt",
            (*sorted(jobs.TERMINAL), jobs.format_time(cutoff)),
        )
        return [_record(row) for row in rows]

    def records(self) -> Iterator[Record]:
        """Streamed, on a connection of its own for as long as the iteration lasts (the audit reads every record)."""
        try:
            with self._connection() as db:
                for row in db.execute("SELECT * FROM Queue ORDER BY createdAt, id"):
                    yield _record(row)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite {self.path}: {exc}") from exc

    # --- SAMOutput -------------------------------------------------------------

    def put_output(self, output: Record) -> None:
        names = list(OUTPUT_COLUMNS) + ["_etag"]
        self._execute(
            f"INSERT OR REPLACE INTO SAMOutput ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
            _to_row({"cachedEmbedding": False, "video": None, **output}, OUTPUT_COLUMNS) + [_new_etag()],
        )

    def get_output(self, job_id: str) -> Record | None:
        rows, _ = self._execute("SELECT * FROM SAMOutput WHERE id = ?", (job_id,))
        if not rows:
            return None
        output = _from_row(rows[0], OUTPUT_COLUMNS)
        output["cachedEmbedding"] = bool(output["cachedEmbedding"])
        if output["video"] is None:  # an image's result: no video column, as it was put
            del output["video"]
        return output

    # --- housekeeping ----------------------------------------------------------

    def check(self) -> None:
        """Upsert the one `Health` row, waiting at most CHECK_TIMEOUT_SECONDS for the write lock."""
        try:
            with self._connection() as db:
                db.execute(f"PRAGMA busy_timeout = {CHECK_TIMEOUT_SECONDS * 1000}")
                try:
                    db.execute(
                        "INSERT INTO Health (id, checkedAt) VALUES ('probe', ?) "
                        "ON CONFLICT (id) DO UPDATE SET checkedAt = excluded.checkedAt",
                        (jobs.format_time(utcnow()),),
                    )
                finally:
                    db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_SECONDS * 1000}")
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"SQLite {self.path} cannot be written: {exc}") from exc

    def register_server(self) -> bool:
        """A shared `flock` on `<SQLITE_PATH>.lock` until `close()`; alone if an exclusive one was free first.

        The exclusive lock is turned into a shared one at once: a server that
        starts a moment later shares the file, and is not alone.
        """
        lock_path = self.path.with_name(f"{self.path.name}.lock")
        try:
            handle = open(lock_path, "ab")
        except OSError as exc:
            log.warning("cannot open %s (%s): records left unfinished are left to the sweep", lock_path, exc.strerror)
            return False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            alone = True
        except BlockingIOError:
            alone = False
        fcntl.flock(handle, fcntl.LOCK_SH)
        self._server_lock = handle
        return alone

    def close(self) -> None:
        with self._pool_lock:
            self._closed = True
            self._idle.clear()
            connections = list(self._connections)
        for db in connections:
            db.close()
        if self._server_lock is not None:
            self._server_lock.close()  # releases the flock
            self._server_lock = None
