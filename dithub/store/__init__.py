"""Objects, ids, object stores, refs and locks. Knows nothing of ML (no torch)."""
from .atomic import atomic_write, atomic_write_parts, fsync_dir
from .config import read_config, repo_hash, write_config
from .ids import DEFAULT_HASH, HASHES, LEGACY_HASH, Hash, ObjectId, canonical_json, hash_named, is_object_id, object_id
from .objects import DTYPE_SIZES, TREE_KINDS, Commit, Op, TensorEntry, Tree, nbytes_of, object_type
from .objectstore import BaseObjectStore, DiskObjectStore, MemoryObjectStore, TensorData
from .refs import BaseRefStore, DiskRefStore, MemoryRefStore, ReflogEntry, check_ref_name

__all__ = ["atomic_write", "atomic_write_parts", "fsync_dir", "read_config", "repo_hash", "write_config", "DEFAULT_HASH", "HASHES",
           "LEGACY_HASH", "Hash", "hash_named", "ObjectId", "canonical_json", "is_object_id", "object_id", "DTYPE_SIZES",
           "TREE_KINDS", "Commit", "Op", "TensorEntry", "Tree", "nbytes_of", "object_type", "BaseObjectStore", "DiskObjectStore",
           "MemoryObjectStore", "TensorData", "BaseRefStore", "DiskRefStore", "MemoryRefStore", "ReflogEntry", "check_ref_name"]
