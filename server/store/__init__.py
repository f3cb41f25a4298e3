"""Stores for Queue records and SAMOutput results; see `base.Store`."""

from __future__ import annotations

from server.config import Settings, SettingsError
from server.store.base import Conflict, Record, Store, StoreUnavailable

__all__ = ["Conflict", "Record", "Store", "StoreUnavailable", "open_store"]


def open_store(settings: Settings) -> Store:
    """The store the settings name: Cosmos DB when COSMOS_ENDPOINT is set, else SQLite."""
    if settings.cosmos_endpoint:
        raise SettingsError(
            "COSMOS_ENDPOINT is set, but this build has no Cosmos DB store yet; "
            "unset it to use the embedded SQLite store."
        )
    from server.store.sqlite import SQLiteStore

    return SQLiteStore(settings.sqlite_path)
