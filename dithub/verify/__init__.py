"""Checks on a commit that CI runs on merged adapters (integrity, structure, numeric sanity,
behaviour on probe sets, a backdoor screen), the ``dithub.toml`` policy, and git hooks."""
from .checks import CHECKS, CheckResult
from .policy import Policy, Settings, load_policy
from .run import JSON_FORMAT, VerifyReport, verify

__all__ = ["CHECKS", "CheckResult", "JSON_FORMAT", "Policy", "Settings", "VerifyReport", "load_policy", "verify"]
