"""Where checkpoint bytes live: a directory (``file://``) or an S3 prefix (``s3://``).

Each store is a flat namespace of small names (``latest``, ``step-00000003.ckpt``);
the checkpoint policy (naming, ordering, rotation) lives in ``checkpoint.py``.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
import urllib.parse
from typing import Any, Protocol


class Store(Protocol):
    uri: str

    def read(self, name: str) -> bytes | None:
        """The object's bytes, or None when it does not exist."""
        ...

    def write(self, name: str, data: bytes) -> None:
        """Replace the object as a whole: readers see the old or the new bytes, never a mix."""
        ...

    def names(self) -> list[str]: ...

    def delete(self, name: str) -> None: ...


class FileStore:
    def __init__(self, directory: str) -> None:
        self.directory = os.path.abspath(directory)
        self.uri = "file://" + urllib.parse.quote(self.directory)

    def _path(self, name: str) -> str:
        return os.path.join(self.directory, name)

    def read(self, name: str) -> bytes | None:
        try:
            with open(self._path(name), "rb") as handle:
                return handle.read()
        except FileNotFoundError:
            return None

    def write(self, name: str, data: bytes) -> None:
        os.makedirs(self.directory, exist_ok=True)
        # The temporary file is in the same directory so the rename cannot cross file
        # systems, and is dot-named so names() never lists a half-written checkpoint.
        fd, temp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.directory)
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(temp, self._path(name))
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
        self._sync_directory()

    def _sync_directory(self) -> None:
        # Without this the rename itself may not survive a node crash, and `latest` could
        # come back pointing at a checkpoint whose directory entry was lost.
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            os.fsync(fd)
        except OSError:
            pass  # Some file systems (and all of Windows) refuse fsync on directories.
        finally:
            os.close(fd)

    def names(self) -> list[str]:
        try:
            return [entry for entry in os.listdir(self.directory) if not entry.startswith(".")]
        except FileNotFoundError:
            return []

    def delete(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self._path(name))


class S3Store:
    """Objects under ``s3://bucket/prefix/``; a single PUT is atomic on S3.

    The endpoint comes from ``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` explicitly,
    not only through boto3's own support, so images with an older boto3 can still point
    at MinIO or a test server.
    """

    def __init__(self, bucket: str, prefix: str) -> None:
        if not bucket:
            raise ValueError("an s3:// checkpoint URI needs a bucket: s3://bucket/prefix")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.uri = f"s3://{bucket}/{self.prefix}" if self.prefix else f"s3://{bucket}"
        self._client: Any = None

    @property
    def client(self) -> Any:
        if self._client is None:
            import boto3  # Lazy: file:// checkpoints and reports need no boto3.

            endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
            self._client = boto3.client("s3", endpoint_url=endpoint or None)
        return self._client

    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def read(self, name: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            response = self.client.get_object(Bucket=self.bucket, Key=self._key(name))
        except ClientError as err:
            if err.response.get("Error", {}).get("Code") in {"NoSuchKey", "404", "NotFound"}:
                return None
            raise
        with contextlib.closing(response["Body"]) as body:
            return body.read()

    def write(self, name: str, data: bytes) -> None:
        # upload_fileobj switches to multipart for large checkpoints (a single PUT stops
        # at 5 GB); S3 still makes the object visible only once complete.
        self.client.upload_fileobj(io.BytesIO(data), self.bucket, self._key(name))

    def names(self) -> list[str]:
        start = f"{self.prefix}/" if self.prefix else ""
        result: list[str] = []
        paginator = self.client.get_paginator("list_objects_v2")
        # Delimiter keeps objects of "deeper" prefixes (another trial named like a
        # sub-directory of this one) out of the listing.
        for page in paginator.paginate(Bucket=self.bucket, Prefix=start, Delimiter="/"):
            result += [item["Key"][len(start) :] for item in page.get("Contents", [])]
        return result

    def delete(self, name: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(name))


def open_store(uri: str) -> FileStore | S3Store:
    """A store for ``file:///abs/dir``, ``s3://bucket/prefix`` or a plain local path."""
    parsed = urllib.parse.urlsplit(uri)
    if parsed.scheme == "s3":
        # Not unquoted: S3 tools (aws s3, boto3) write keys raw in s3:// URIs.
        return S3Store(parsed.netloc, parsed.path)
    if parsed.scheme == "file":
        if parsed.netloc not in ("", "localhost"):
            raise ValueError(f"file:// checkpoint URI must be local, got host {parsed.netloc!r}")
        return FileStore(urllib.parse.unquote(parsed.path))
    if parsed.scheme == "":
        # A bare path: convenient when a script is run by hand.
        return FileStore(uri)
    raise ValueError(f"unsupported checkpoint URI scheme {parsed.scheme!r} in {uri!r}")
