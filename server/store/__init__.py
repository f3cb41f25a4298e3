"""Stores for Queue records and SAMOutput results; see `base.Store`."""

from __future__ import annotations

from server.config import Settings, SettingsError
from server.store.base import Conflict, ItemTooLarge, Record, Store, StoreUnavailable

__all__ = ["Conflict", "ItemTooLarge", "Record", "Store", "StoreUnavailable", "open_store"]


def open_store(settings: Settings) -> Store:
    """The store the settings name: Cosmos DB when COSMOS_ENDPOINT is set, else SQLite."""
    if settings.cosmos_endpoint:
        from server.store.cosmos import CosmosStore

        if not settings.cosmos_key:
            raise SettingsError("COSMOS_ENDPOINT is set but COSMOS_KEY is not; set both to use Cosmos DB.")
        return CosmosStore(
            settings.cosmos_endpoint,
            settings.cosmos_key,
            database=settings.cosmos_database,
            queue_container=settings.cosmos_queue_container,
            output_container=settings.cosmos_output_container,
            verify_tls=settings.cosmos_verify_tls,
            timeout=settings.cosmos_timeout,
        )
    from server.store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path)
