"""The feature stores: the only contract between stage one and the later stages."""
from .errors import CorruptStore, IncompleteStore, NonFiniteFeatures, ProvenanceMismatch, StoreError
from .files import remove_store
from .items import ItemTable
from .provenance import Provenance
from .reader import FeatureStore, open_store
from .writer import StoreWriter, open_writer

__all__ = ["CorruptStore", "FeatureStore", "IncompleteStore", "ItemTable", "NonFiniteFeatures", "Provenance",
           "ProvenanceMismatch", "StoreError", "StoreWriter", "open_store", "open_writer", "remove_store"]
