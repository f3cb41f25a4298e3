"""The Azure Cosmos DB store, through the official `azure-cosmos` SDK (sync).

- Two containers, `Queue` and `SAMOutput`, partition key `/id`, created with
  their database when missing, and created again if they disappear.
- Every update is `replace_item(..., etag=…, match_condition=IfNotModified)`;
  a 412 becomes `Conflict`, so `Store.update` re-reads and decides again.
- Every SDK call carries a `timeout` (COSMOS_TIMEOUT) that bounds the whole
  operation, retries included; the SDK retries throttling (429) and
  connection errors with backoff inside it, and this module retries other
  transient failures of idempotent calls. What still fails is
  `StoreUnavailable`, never a hang.
- The hot path uses point reads by id; queries serve the processor's claim,
  the queue count and the sweep.
- Cosmos DB refuses items over 2 MB. A result whose masks are larger is
  split: its masks JSON is cut into chunks stored as `<id>.masks.<n>` items,
  and the `SAMOutput` item records how many. No item written is ever over
  the limit; `ItemTooLarge` is raised before a write that would be.
"""

from __future__ import annotations

import collections
import datetime as dt
import json
import logging
import threading
import time
from typing import Any, Callable, Iterator, TypeVar

from azure.core import MatchConditions
from azure.core.exceptions import AzureError
from azure.cosmos import ContainerProxy, CosmosClient, PartitionKey, exceptions

from server import jobs
from server.clock import utcnow
from server.store.base import Conflict, ItemTooLarge, Record, Store, StoreUnavailable

log = logging.getLogger(__name__)

T = TypeVar("T")

MAX_ITEM_BYTES = 2 * 1024 * 1024  # Cosmos DB's limit for one item
# Masks JSON up to this size stays inline; past it, chunks of this size. The
# margin leaves room for the other fields and Cosmos DB's system properties.
MASKS_CHUNK_BYTES = MAX_ITEM_BYTES - 64 * 1024
SYSTEM_FIELDS = ("_rid", "_self", "_attachments", "_ts")
NON_TERMINAL = (jobs.QUEUED, jobs.PROCESSING, jobs.PROCESSED)
# /health's probe: the one item it upserts in SAMOutput (results are named by UUID).
HEALTH_ITEM_ID = "cap-health-probe"
TRANSIENT_RETRIES = 2
RETRY_BACKOFF_SECONDS = 0.2


def _clean(item: dict[str, Any]) -> Record:
    """An item as the store interface returns it: the fields and `_etag`."""
    return {k: v for k, v in item.items() if k not in SYSTEM_FIELDS}


def _body(record: Record) -> dict[str, Any]:
    """A record as Cosmos DB stores it: system properties are Cosmos DB's to set."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _check_size(item: dict[str, Any]) -> None:
    size = len(json.dumps(item).encode())
    if size > MAX_ITEM_BYTES:
        raise ItemTooLarge(f"item {item.get('id')} is {size} bytes; Cosmos DB's limit is {MAX_ITEM_BYTES}")


class CosmosStore(Store):
    def __init__(
        self,
        endpoint: str,
        key: str,
        *,
        database: str,
        queue_container: str,
        output_container: str,
        verify_tls: bool = True,
        timeout: float = 10.0,
        masks_chunk_bytes: int = MASKS_CHUNK_BYTES,
    ):
        self.endpoint = endpoint
        self.timeout = timeout
        self.masks_chunk_bytes = masks_chunk_bytes
        self.operations: collections.Counter[str] = collections.Counter()
        self._key = key
        self._verify_tls = verify_tls
        self._names = (database, queue_container, output_container)
        self._lock = threading.Lock()
        self._client: CosmosClient | None = None
        self._containers: tuple[ContainerProxy, ContainerProxy] | None = None

    # --- connection and containers -----------------------------------------------------

    def _ready(self) -> tuple[ContainerProxy, ContainerProxy]:
        """The Queue and SAMOutput containers, connecting and creating them if needed.

        Connecting is lazy so that the server starts, and says so on /health,
        while the database is unreachable.
        """
        with self._lock:
            if self._containers is None:
                if self._client is None:
                    self._client = CosmosClient(
                        self.endpoint,
                        credential=self._key,
                        connection_verify=self._verify_tls,
                        connection_timeout=self.timeout,
                        read_timeout=self.timeout,
                        retry_total=3,
                        retry_backoff_max=max(1, int(self.timeout)),
                    )
                name, queue_name, output_name = self._names
                database = self._client.create_database_if_not_exists(name, timeout=self.timeout)
                self._containers = tuple(
                    database.create_container_if_not_exists(
                        id=container, partition_key=PartitionKey(path="/id"), timeout=self.timeout
                    )
                    for container in (queue_name, output_name)
                )
                log.info("Cosmos DB ready: database %s, containers %s and %s", *self._names)
            return self._containers

    def _forget_containers(self) -> None:
        with self._lock:
            self._containers = None

    def _call(self, operation: str, fn: Callable[[ContainerProxy, ContainerProxy], T], *, idempotent: bool = True) -> T:
        """Run one store operation: bounded, retried when safe, errors mapped.

        A 404 from anything but a point read means a container is gone (the
        database was reset): forget the containers, so the next try makes
        them again.
        """
        attempts = 1 + (TRANSIENT_RETRIES if idempotent else 0)
        for attempt in range(1, attempts + 1):
            self.operations[operation] += 1
            try:
                return fn(*self._ready())
            except exceptions.CosmosAccessConditionFailedError:
                raise Conflict("the item changed since it was read") from None
            except exceptions.CosmosResourceNotFoundError as exc:
                self._forget_containers()
                error: Exception = exc
            except (exceptions.CosmosHttpResponseError, AzureError) as exc:
                error = exc
            if attempt < attempts:
                time.sleep(RETRY_BACKOFF_SECONDS * attempt)
        summary = str(error).strip().splitlines()[0][:200] if str(error).strip() else type(error).__name__
        raise StoreUnavailable(f"Cosmos DB {operation} failed: {summary}") from error

    # --- Queue -----------------------------------------------------------------

    def insert(self, record: Record) -> Record:
        body = _body(record)
        _check_size(body)
        created = self._call("create", lambda q, _: q.create_item(body, timeout=self.timeout), idempotent=False)
        return _clean(created)

    def get(self, job_id: str) -> Record | None:
        return self._point_read("read", 0, job_id)

    def _point_read(self, operation: str, container: int, item_id: str) -> Record | None:
        def read(*containers: ContainerProxy) -> Record | None:
            try:
                return _clean(containers[container].read_item(item_id, partition_key=item_id, timeout=self.timeout))
            except exceptions.CosmosResourceNotFoundError:
                return None  # the item is not there (the emulator's launcher turns its 500 into this 404)

        return self._call(operation, read)

    def replace(self, record: Record, *, etag: str) -> Record:
        body = _body(record)
        _check_size(body)

        def write(queue: ContainerProxy, _: ContainerProxy) -> Record:
            try:
                return _clean(
                    queue.replace_item(
                        body["id"], body, etag=etag, match_condition=MatchConditions.IfNotModified, timeout=self.timeout
                    )
                )
            except exceptions.CosmosResourceNotFoundError:
                raise Conflict(f"record {body['id']} is gone") from None

        return self._call("replace", write)

    def _query(self, container: int, query: str, **parameters: Any) -> list[Any]:
        params = [{"name": f"@{name}", "value": value} for name, value in parameters.items()]

        def run(*containers: ContainerProxy) -> list[Any]:
            items = containers[container].query_items(
                query, parameters=params, enable_cross_partition_query=True, timeout=self.timeout
            )
            return list(items)

        return self._call("query", run)

    def claimable(self, now: dt.datetime, limit: int, after: str | None = None) -> list[Record]:
        items = self._query(
            0,
            "SELECT TOP @limit * FROM c WHERE (c.status = @queued "
            "OR (c.status = @processing AND c.leaseUntil <= @now)) AND c.createdAt > @after ORDER BY c.createdAt",
            limit=limit, queued=jobs.QUEUED, processing=jobs.PROCESSING, now=jobs.format_time(now),
            after=after or "",
        )
        return [_clean(item) for item in items]

    def with_image(self, sha256: str, limit: int, scope: str | None) -> list[Record]:
        in_scope, by_scope = ("NOT IS_STRING(c.scope)", {}) if scope is None else ("c.scope = @scope", {"scope": scope})
        items = self._query(
            0,
            f"SELECT TOP @limit * FROM c WHERE c.imageSha256 = @sha256 AND {in_scope} ORDER BY c.createdAt DESC",
            limit=limit, sha256=sha256, **by_scope,
        )
        return [_clean(item) for item in items]

    def count_queued(self) -> int:
        return self._query(0, "SELECT VALUE COUNT(1) FROM c WHERE c.status = @queued", queued=jobs.QUEUED)[0]

    def unfinished_before(self, cutoff: dt.datetime) -> list[Record]:
        items = self._query(
            0,
            "SELECT * FROM c WHERE c.status IN (@a, @b, @c) AND c.createdAt < @cutoff ORDER BY c.createdAt",
            a=NON_TERMINAL[0], b=NON_TERMINAL[1], c=NON_TERMINAL[2], cutoff=jobs.format_time(cutoff),
        )
        return [_clean(item) for item in items]

    def records(self) -> Iterator[Record]:
        for item in self._query(0, "SELECT * FROM c ORDER BY c.createdAt"):
            yield _clean(item)

    # --- SAMOutput -------------------------------------------------------------

    def put_output(self, output: Record) -> None:
        head = _body(output)
        masks_json = json.dumps(head["masks"])  # ASCII: one character is one byte
        if len(masks_json) > self.masks_chunk_bytes:
            chunks = [
                masks_json[start : start + self.masks_chunk_bytes]
                for start in range(0, len(masks_json), self.masks_chunk_bytes)
            ]
            # Chunks first: a reader who finds the head finds every chunk.
            for index, chunk in enumerate(chunks):
                self._upsert({"id": f"{head['id']}.masks.{index}", "chunk": chunk})
            head = {**head, "masks": None, "maskChunks": len(chunks)}
        self._upsert(head)

    def _upsert(self, item: dict[str, Any]) -> None:
        _check_size(item)
        self._call("upsert", lambda _, out: out.upsert_item(item, timeout=self.timeout))

    def get_output(self, job_id: str) -> Record | None:
        head = self._point_read("read", 1, job_id)
        if head is None or "maskChunks" not in head:
            return head
        parts = []
        for index in range(head.pop("maskChunks")):
            part = self._point_read("read", 1, f"{job_id}.masks.{index}")
            if part is None:
                raise StoreUnavailable(f"result {job_id} is missing chunk {index}")
            parts.append(part["chunk"])
        return {**head, "masks": json.loads("".join(parts))}

    # --- housekeeping ----------------------------------------------------------

    def check(self) -> None:
        """A read of `Queue` and an upsert of one small item in `SAMOutput`; recreates the containers if they are gone."""
        probe = {"id": HEALTH_ITEM_ID, "checkedAt": jobs.format_time(utcnow())}

        def probe_write(queue: ContainerProxy, output: ContainerProxy) -> None:
            queue.read(timeout=self.timeout)
            output.upsert_item(probe, timeout=self.timeout)

        self._call("check", probe_write, idempotent=False)  # one try: /health must answer quickly

    def close(self) -> None:
        with self._lock:
            if self._client is not None:
                self._client.close()
            self._client = self._containers = None
