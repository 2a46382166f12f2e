"""The store interface in one import: the names `extract`, `train` and `analyse` use, re-exported.

The implementation is split by job: items.py (item table), backend.py + formats.py (backends and their
registry), checks.py + integrity.py (structure and checksums), reader.py (`open_store`, `FeatureStore`),
writer.py (`open_writer`, `StoreWriter`), files.py (journal and temporary paths), errors.py.
"""
from .errors import CorruptStore, IncompleteStore, NonFiniteFeatures, ProvenanceMismatch, StoreError
from .files import journal_path, remove_store
from .items import ITEM_COLUMNS, SKIP_COLUMNS, ItemTable, SkippedTable
from .reader import FeatureStore, open_store
from .writer import FLOAT16_MAX, StoreWriter, open_writer

__all__ = ["CorruptStore", "FLOAT16_MAX", "FeatureStore", "ITEM_COLUMNS", "IncompleteStore", "ItemTable", "NonFiniteFeatures",
           "ProvenanceMismatch", "SKIP_COLUMNS", "SkippedTable", "StoreError", "StoreWriter", "journal_path",
           "open_store", "open_writer", "remove_store"]
