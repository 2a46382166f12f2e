"""The feature stores: the only contract between stage one and the later stages."""
from .provenance import Provenance
from .store import (FeatureStore, IncompleteStore, ItemTable, ProvenanceMismatch, StoreError, StoreWriter,
                    open_store, open_writer, remove_store)

__all__ = ["FeatureStore", "IncompleteStore", "ItemTable", "Provenance", "ProvenanceMismatch", "StoreError",
           "StoreWriter", "open_store", "open_writer", "remove_store"]
