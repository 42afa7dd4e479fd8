"""Model files from anywhere fsspec reads, fetched once per process into a local cache."""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from pathlib import Path

import fsspec

logger = logging.getLogger(__name__)

_fetched: dict[tuple[str, str], Path] = {}
_lock = threading.Lock()


def is_remote(uri: str) -> bool:
    """True for a URI with a scheme other than ``file://`` (``s3://``, ``gs://``, ``http://``, ``memory://``)."""
    return "://" in uri and not uri.startswith("file://")


def default_cache_dir() -> Path:
    """``$SEGCORE_CACHE`` or ``~/.cache/segcore``."""
    return Path(os.environ.get("SEGCORE_CACHE", Path.home() / ".cache" / "segcore"))


def fetch(uri: str, storage_options: dict | None = None, cache_dir: str | os.PathLike | None = None) -> Path:
    """Returns a local path holding ``uri`` (a file or a folder), copying remote URIs once per process.

    A local path (or ``file://`` URI) is returned as is. A remote one is copied to
    ``<cache_dir>/models/<sha256 of the URI>/``; later calls in the same process reuse the copy, and a copy
    left complete by an earlier process (its ``.complete`` marker exists) is reused too.

    Raises:
        FileNotFoundError: nothing exists at ``uri``; the message names it.
    """
    if not is_remote(uri):
        path = Path(uri.removeprefix("file://")).expanduser()
        if not path.exists():
            raise FileNotFoundError(f"Expected model files at {uri!r}, but nothing is there")
        return path
    cache = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    key = (uri, str(cache))
    with _lock:
        if key not in _fetched:
            _fetched[key] = _copy_remote(uri, storage_options or {}, cache)
        return _fetched[key]


def _copy_remote(uri: str, storage_options: dict, cache: Path) -> Path:
    """Copies a remote file or folder under ``cache`` unless a complete copy is already there."""
    target = cache / "models" / hashlib.sha256(uri.encode()).hexdigest()[:32]
    complete = target / ".complete"
    name = uri.rstrip("/").rsplit("/", 1)[-1]
    fs, path = fsspec.core.url_to_fs(uri, **storage_options)
    if not fs.exists(path):
        raise FileNotFoundError(f"Expected model files at {uri!r}, but nothing is there")
    is_dir = fs.isdir(path)
    if not complete.exists():
        target.mkdir(parents=True, exist_ok=True)
        logger.info("fetching model files from %s into %s", uri, target)
        if is_dir:
            fs.get(path.rstrip("/") + "/", str(target) + "/", recursive=True)
        else:
            fs.get(path, str(target / name))
        complete.write_text(uri + "\n")
    return target if is_dir else target / name
