"""Remote storage through fsspec (a path, file://, memory://, s3://): the objects and refs at a
location, lock objects, what a transfer sends and the receiver that checks what arrives. The verbs
(fetch, push, clone, pull) are ``dithub.ops.sync``.
"""
from .location import Location
from .transfer import Plan, plan

__all__ = ["Location", "Plan", "plan"]
