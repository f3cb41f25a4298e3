"""Wiring and lifecycle: the store, the processor thread and the WebSocket server; start, drain, stop.

One port serves both: plain HTTP (the page, /ping, /health, /metrics) is
answered by `server.routes`; a WebSocket upgrade on `/` starts a
`Conversation` (server/connection.py) in the server's per-connection
thread, which sees the rest of the server only through an `Intake`.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import logging
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
import uuid
from typing import Callable, NoReturn

from websockets.sync.server import Server, serve

from server import data_urls, image_source, images, logs, recovery
from server.adapters import mounts
from server.budget import PixelBudget
from server.compression import SizeAwareDeflateFactory
from server.config import Settings, SettingsError
from server.connection import Conversation
from server.connection_slots import ConnectionSlots
from server.image_store import ImageStore
from server.intake import Intake
from server.listener import LimitedListener
from server.mask_cache import MaskCache
from server.metrics import LiveState, Metrics
from server.models.checkpoint_file import CheckpointError, check_checkpoint
from server.models.device import DeviceError, check_device
from server.models.loading import production_model_loader
from server.models.seam import SegmentationModel
from server.processor import Processor
from server.routes import Health, Routes
from server.store import Store, open_store
from server.sweeper import Sweeper
from server.wakeups import JobEvents, RingingConnection

log = logging.getLogger(__name__)

# The WebSocket layer drops messages past this multiple of MAX_MESSAGE_BYTES
# (plus room for an inline image, see `hard_message_limit`) with a bare close
# 1009; up to it, the request is read and refused with a typed
# `message_too_large` error.
HARD_MESSAGE_LIMIT_FACTOR = 4
WATCHDOG_SECONDS = 1.0
# After DRAIN_SECONDS, how long a stop may still take: conversations end
# with `shutting_down`, then the processor gets what is left of this.
STOP_GRACE_SECONDS = 10.0
# The end of that grace kept for leaving once the processor is let go: closing
# the store and the process's own teardown (0.2 s measured with a model in torch).
EXIT_SECONDS = 1.0


def hard_message_limit(settings: Settings) -> int:
    """The largest message the WebSocket layer reads at all."""
    return settings.max_message_bytes * HARD_MESSAGE_LIMIT_FACTOR + data_urls.data_url_max_chars(
        settings.max_image_bytes
    )


class App:
    """The running service. `start()` returns at once; `stop()` ends it within DRAIN_SECONDS + STOP_GRACE_SECONDS."""

    def __init__(self, settings: Settings, store: Store, load_model: Callable[[], SegmentationModel]):
        self.settings = settings
        self.store = store
        self.server_id = f"cap-{uuid.uuid4().hex[:8]}"
        self.events = JobEvents()
        self.budget = PixelBudget(settings.pixel_budget_mb * 2**20)
        self.mask_cache = MaskCache(settings.mask_cache_size)
        self.stop_requested = threading.Event()  # a signal, or a fatal error: wait() returns
        self.draining = threading.Event()  # refuse new work; stored requests go on
        self.stopping = threading.Event()  # waiting conversations end now with shutting_down
        self.fatal: Exception | None = None
        self.image_store = ImageStore(settings, store)
        self.sweeper = Sweeper(settings, store, self.image_store, on_interrupted=self.events.notify)
        self.processor = Processor(
            store=store,
            settings=settings,
            load_model=load_model,
            events=self.events,
            budget=self.budget,
            mask_cache=self.mask_cache,
            image_store=self.image_store,
            server_id=self.server_id,
            on_fatal=self._on_fatal,
        )
        self.slots = ConnectionSlots(settings.max_connections, settings.max_connections_per_client)
        self.metrics = Metrics(
            LiveState(
                connections=lambda: self.slots.open,
                sessions=lambda: self.intake.sessions,
                refused=lambda: {**self.slots.refused, "sockets": self.listener.refused},
                queue_depth=store.count_queued,
                model=self._loaded_model,
                pixel_budget=self.budget,
                image_usage=lambda: self.image_store.usage,
            )
        )
        self.health = Health(
            settings,
            store,
            model_loaded=lambda: self._loaded_model() is not None,
            connections=lambda: self.slots.open,
            draining=self.draining,
        )
        self.intake = Intake(
            settings=settings,
            store=store,
            processor=self.processor,
            read_image=functools.partial(
                image_source.read,
                settings=settings,
                store=store,
                budget=self.budget,
                embedding_cached=self.processor.has_embedding,
            ),
            events=self.events,
            budget=self.budget,
            mask_cache=self.mask_cache,
            image_store=self.image_store,
            metrics=self.metrics,
            draining=self.draining,
            stopping=self.stopping,
            server_id=self.server_id,
        )
        self.segmenter, self.front, self.cvat_port = mounts.fronts(settings, self.intake, self.budget, self.slots)
        self._routes = Routes(settings, self.health, self.metrics, self.draining, self.slots, self.front)
        self._server: Server | None = None
        self._serve_thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return self._server.socket.getsockname()[1]

    @property
    def connections(self) -> int:
        """Open WebSocket connections (each holds one of MAX_CONNECTIONS' places)."""
        return self.slots.open

    def start(self) -> None:
        recovery.interrupt_orphans(self.store)  # before the processor could take them
        self.processor.start()
        self.sweeper.start()
        self.listener = LimitedListener(
            socket.create_server((self.settings.host, self.settings.port)), self.settings.max_connections
        )
        self._server = serve(
            self._handle,
            sock=self.listener,
            process_request=self._routes.process_request,
            create_connection=RingingConnection,
            max_size=hard_message_limit(self.settings),
            compression=None,  # permessage-deflate decided per message instead: server/compression.py
            extensions=[SizeAwareDeflateFactory()],
        )
        self._server.handler = self.listener.track(
            self.front.before_websockets(self._server, self._server.handler), ended=self.slots.give_back
        )
        self._serve_thread = threading.Thread(target=self._server.serve_forever, name="accept", daemon=True)
        self._serve_thread.start()
        log.info("listening on %s:%d (server id %s)", self.settings.host, self.port, self.server_id)
        if self.cvat_port is not None:
            self.cvat_port.start()

    def wait(self) -> None:
        """Block until a stop is requested (signal) or the service cannot go on.

        The processor thread never dies by design; if it does anyway, this
        returns with `fatal` set, so that the process exits non-zero and a
        supervisor (Docker) restarts it, rather than serving without
        processing.
        """
        while not self.stop_requested.wait(WATCHDOG_SECONDS):
            if self.processor.ready.is_set() and not self.processor.is_alive():
                self.fatal = RuntimeError("The processor thread died (see the log); exiting so that it is restarted.")
                log.critical("%s", self.fatal)
                return

    def stop(self) -> None:
        """Drain, then end whoever still waits, then stop the processor: at most DRAIN_SECONDS + STOP_GRACE_SECONDS.

        1. Draining: new connections get 503 and new requests `shutting_down`;
           requests already stored go on for up to DRAIN_SECONDS.
        2. Stopping: conversations still waiting send `shutting_down` and mark
           their records interrupted. A connection still open after half the
           grace (a client that does not read, say) has its socket shut.
        3. The processor finishes its batch if it can within the rest of the
           grace; a batch that runs on past it is left: its records' leases
           run out, and another replica (or this one, restarted) takes them.
        """
        self.draining.set()
        self._ring_every_connection()  # idle sessions end now with shutting_down
        if self.fatal is None:
            deadline = time.monotonic() + self.settings.drain_seconds
            while self.slots.open and time.monotonic() < deadline:
                time.sleep(0.05)
        self.stopping.set()
        self._ring_every_connection()
        grace_ends = time.monotonic() + STOP_GRACE_SECONDS - EXIT_SECONDS
        if self._server is not None:
            self._shut_server(timeout=STOP_GRACE_SECONDS / 2)
        if self.cvat_port is not None:
            self.cvat_port.close(timeout=max(0.0, grace_ends - time.monotonic()))
        self.processor.stop(timeout=max(0.0, grace_ends - time.monotonic()))
        if self.processor.is_alive():
            log.warning("the processor was still busy at the end of the stop grace; its records will be retried")
        self.sweeper.stop(timeout=max(0.0, grace_ends - time.monotonic()))
        self.store.close()

    def _ring_every_connection(self) -> None:
        """Wake every conversation, so that it sees `draining` or `stopping` at once (server/wakeups.py)."""
        if self._server is not None:
            for connection in list(self._server.connections):
                connection.bell.ring()

    def _shut_server(self, timeout: float) -> None:
        """Stop accepting, and wait for the conversations to end; cut their sockets if they outlast `timeout`."""
        server = self._server
        assert server is not None
        # Conversations were rung and see `stopping` at once; shutdown() waits for them.
        closer = threading.Thread(target=server.shutdown, kwargs={"close_connections": False}, daemon=True)
        closer.start()
        closer.join(timeout)
        if closer.is_alive():
            for connection in list(server.connections):
                with contextlib.suppress(OSError):
                    connection.socket.shutdown(socket.SHUT_RDWR)
            closer.join(1.0)

    def _on_fatal(self, exc: Exception) -> None:
        self.fatal = exc
        self.stop_requested.set()

    def _loaded_model(self) -> SegmentationModel | None:
        processor = self.processor
        return processor.model if processor.ready.is_set() and processor.is_alive() else None

    def _handle(self, ws: RingingConnection) -> None:
        Conversation(ws, self.intake, scope=self._routes.tokens.scope(ws.request)).run()


def serve_forever(settings: Settings) -> int:
    """`python -m server`: run until SIGTERM or SIGINT; the process exit code.

    What stops it from starting (the device, the checkpoint, the port, the
    store) is one sentence on stderr and exit status 2, before any thread starts.
    """
    try:
        check_device(settings.sam_device)
        check_checkpoint(settings.sam_model_type, settings.sam_checkpoint)
        with _listening_socket(settings):
            pass  # the port is free (App binds it again, below)
        problem = storage_problem(settings)
        if problem:
            raise SettingsError(problem)
        store = _open_store(settings)
    except (DeviceError, CheckpointError, SettingsError) as exc:
        print(f"cap: {exc}", file=sys.stderr)
        return 2
    app = App(settings, store, production_model_loader(settings))
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: app.stop_requested.set())
    try:
        app.start()
    except OSError as exc:  # taken in the moment since the check above
        print(f"cap: {_listen_error(settings, exc)}", file=sys.stderr)
        return 2
    app.wait()
    log.info("stopping")
    app.stop()
    status = 0
    if app.fatal is not None:
        print(f"cap: {app.fatal}", file=sys.stderr)
        status = 2
    if app.processor.is_alive():
        _exit_under_the_model(status)
    return status


def _exit_under_the_model(status: int) -> NoReturn:
    """End the process while the processor thread is still inside the model (a long encode, a load).

    A normal exit finalizes the interpreter under that daemon thread: when its
    torch call returns and asks for the GIL back, Python ends the thread with
    pthread_exit, whose unwinding through torch's C++ frames calls
    std::terminate ("terminate called without an active exception": abort,
    exit 134). The stop is done (the waiting clients were told, the store is
    closed): flush the logs and leave without finalizing.
    """
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def storage_problem(settings: Settings) -> str | None:
    """One sentence if IMAGE_DIR cannot be written; else None. (The SQLite file's folder: `_open_store`.)"""
    problem = images.writable_problem(settings.image_dir)
    if problem:
        return f"IMAGE_DIR {problem}: give the server's user write access, or set IMAGE_DIR to a writable folder."
    return None


def _listen_error(settings: Settings, exc: OSError) -> str:
    where = f"{settings.host}:{settings.port}"
    if exc.errno == errno.EADDRINUSE:
        return f"Port {settings.port} is in use on {settings.host} (another CAP?): stop that process, or set PORT to a free port."
    if exc.errno == errno.EACCES:
        return f"Not allowed to listen on {where}: set PORT to 1024 or above, or run as a user that may bind it."
    return f"Cannot listen on {where} ({exc.strerror}): set HOST to an address of this machine (0.0.0.0 for all) and PORT to a free port."


def _listening_socket(settings: Settings) -> socket.socket:
    try:
        return socket.create_server((settings.host, settings.port))
    except OSError as exc:
        raise SettingsError(_listen_error(settings, exc)) from None


def _open_store(settings: Settings) -> Store:
    try:
        return open_store(settings)
    except (OSError, sqlite3.Error) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise SettingsError(
            f"Cannot open the SQLite store {settings.sqlite_path.resolve()} ({reason}): make its folder writable "
            "by this user (in Docker, a volume on /app/data owned by uid 10001), or set SQLITE_PATH elsewhere."
        ) from None


def configure_logging(settings: Settings) -> None:
    logs.configure(settings.log_level, settings.log_format)
