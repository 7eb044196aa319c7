"""Objects, ids, object stores, refs and locks. Knows nothing of ML (no torch)."""
from .atomic import atomic_write, atomic_write_parts, fsync_dir
from .ids import ObjectId, canonical_json, is_object_id, object_id
from .objects import DTYPE_SIZES, TREE_KINDS, Commit, Op, TensorEntry, Tree, nbytes_of, object_type
from .objectstore import BaseObjectStore, DiskObjectStore, MemoryObjectStore, TensorData
from .refs import BaseRefStore, DiskRefStore, MemoryRefStore, ReflogEntry, check_ref_name

__all__ = ["atomic_write", "atomic_write_parts", "fsync_dir", "ObjectId", "canonical_json", "is_object_id", "object_id", "DTYPE_SIZES",
           "TREE_KINDS", "Commit", "Op", "TensorEntry", "Tree", "nbytes_of", "object_type", "BaseObjectStore", "DiskObjectStore",
           "MemoryObjectStore", "TensorData", "BaseRefStore", "DiskRefStore", "MemoryRefStore", "ReflogEntry", "check_ref_name"]
