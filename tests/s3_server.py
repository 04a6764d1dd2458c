"""A real S3-compatible server (moto's) on 127.0.0.1, for the tests that write to object storage.

Started by the tests themselves, reached over HTTP by s3fs/boto with an
endpoint URL, as s3fs's own test suite does: nothing is patched into Python.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")  # moto accepts any; botocore wants some
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")


@dataclass
class S3:
    endpoint: str
    server: Any
    port: int

    def stop(self) -> None:
        """Stop serving (connections are refused); the data stays, in this process."""
        self.server.stop()

    def restart(self) -> None:
        """Serve again, on the same port, with the same data."""
        from moto.server import ThreadedMotoServer

        self.server = ThreadedMotoServer(ip_address="127.0.0.1", port=self.port, verbose=False)
        self.server.start()

    @property
    def options(self) -> dict[str, Any]:
        return {"client_kwargs": {"endpoint_url": self.endpoint}}

    def bucket(self) -> str:
        """A fresh bucket; its URL."""
        import boto3

        name = f"looprt-{secrets.token_hex(4)}"
        boto3.client("s3", endpoint_url=self.endpoint).create_bucket(Bucket=name)
        return f"s3://{name}"

    def fs(self) -> Any:
        import s3fs

        fs = s3fs.S3FileSystem(skip_instance_cache=True, **self.options)
        return fs


def serve() -> Iterator[S3]:
    """Start moto's threaded server on a free port; stop it after."""
    import logging

    from moto.server import ThreadedMotoServer

    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    import socket

    with socket.socket() as probe:  # a fixed port, so that a restarted server is found again
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    s3 = S3(f"http://127.0.0.1:{port}", server, port)
    try:
        yield s3
    finally:
        s3.server.stop()
