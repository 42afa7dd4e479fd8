"""Storage through fsspec: every path argument may be a local path or any URI fsspec reads (s3://, gs://, ...)."""

from __future__ import annotations

import json
import posixpath
from typing import Any, Mapping

import fsspec
from fsspec.core import url_to_fs


def filesystem(uri: str, storage_options: Mapping[str, Any] | None = None) -> tuple[fsspec.AbstractFileSystem, str]:
    """Returns ``(filesystem, path)`` for a URI; ``storage_options`` go to the filesystem (credentials, endpoint)."""
    return url_to_fs(uri, **dict(storage_options or {}))


REDACTED = "REDACTED"
USERINFO_SCHEMES = ("http", "https", "ftp", "sftp", "ssh", "smb", "webdav")  # user:password@ there is a secret


def redact_uri(uri: str) -> str:
    """A URI safe to log and write: its query string (presigned URLs' signatures, Azure SAS tokens) becomes
    ``?REDACTED`` and, for http(s), ftp, sftp, ssh, smb and webdav, user and password are dropped. The real URI
    stays in memory for the reads only. Chained URLs (``tar://m::https://...``) are redacted link by link."""
    if "::" in uri:
        return "::".join(redact_uri(part) for part in uri.split("::"))
    if "://" not in uri:
        return uri
    scheme, rest = uri.split("://", 1)
    if "?" in rest:
        rest = rest.split("?", 1)[0] + "?" + REDACTED
    if scheme.lower() in USERINFO_SCHEMES:
        authority, slash, path = rest.partition("/")
        if "@" in authority:
            rest = authority.rsplit("@", 1)[1] + slash + path
    return f"{scheme}://{rest}"


def join(uri: str, *names: str) -> str:
    """Joins path components onto a URI or local path with '/'."""
    return posixpath.join(uri.rstrip("/"), *names) if "://" in uri else posixpath.join(uri, *names)


class Folder:
    """A folder on any fsspec filesystem, resolved once, from which many files are read by name."""

    def __init__(self, uri: str, storage_options: Mapping[str, Any] | None = None):
        self.uri = uri
        self.fs, self.path = filesystem(uri, storage_options)

    def uri_of(self, name: str) -> str:
        """The URI of a file in this folder, for messages."""
        return join(self.uri, name)

    def read_bytes(self, name: str) -> bytes:
        """Reads a whole file of this folder.

        Raises:
            FileNotFoundError: no such file (the message names it).
        """
        try:
            return self.fs.cat_file(posixpath.join(self.path, name))
        except FileNotFoundError:
            raise FileNotFoundError(f"No such file: {self.uri_of(name)}") from None


def read_bytes(uri: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """Reads a whole file.

    Raises:
        FileNotFoundError: the file does not exist (the message names it).
    """
    fs, path = filesystem(uri, storage_options)
    try:
        return fs.cat_file(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"No such file: {uri}") from None


def read_json(uri: str, storage_options: Mapping[str, Any] | None = None) -> Any:
    """Reads and parses a JSON file.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file is not valid JSON (the message names it).
    """
    data = read_bytes(uri, storage_options)
    try:
        return json.loads(data)
    except ValueError as error:
        raise ValueError(f"{uri} is not valid JSON: {error}") from None


def write_json(uri: str, document: Any, storage_options: Mapping[str, Any] | None = None) -> None:
    """Writes a JSON document as one whole file, creating parent folders on local filesystems."""
    fs, path = filesystem(uri, storage_options)
    parent = posixpath.dirname(path)
    if parent:
        fs.makedirs(parent, exist_ok=True)
    fs.pipe_file(path, json.dumps(document, indent=1).encode())
