"""Edits of one adapter's behaviour recorded as new commits: ``class_vectors`` (arXiv 2510.11268,
forgetting a class by its class vector), pure functions on latents; the operation is ``ops.class_edit``."""
from .class_vectors import REGISTRY, EditMethod, class_vector, steer

__all__ = ["REGISTRY", "EditMethod", "class_vector", "steer"]
