"""Test-only code (not shipped in the wheel): a local S3 server."""

__all__ = ["s3"]
