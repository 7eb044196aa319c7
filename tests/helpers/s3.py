"""Helpers for tests and benchmarks: a real S3-compatible server on 127.0.0.1 (moto in server
mode), so remotes are exercised through s3fs without any external network."""
from __future__ import annotations

import socket
from typing import Any


def s3_server(bucket: str, key: str = "test", secret: str = "test") -> tuple[Any, dict[str, Any]]:
    """Start moto's S3 server on a free local port and create ``bucket``; returns the server (call
    ``.stop()``) and the fsspec storage options that reach it."""
    import boto3
    from moto.server import ThreadedMotoServer

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    boto3.client("s3", endpoint_url=endpoint, aws_access_key_id=key, aws_secret_access_key=secret,
                 region_name="us-east-1").create_bucket(Bucket=bucket)
    return server, {"key": key, "secret": secret, "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
