"""The output layout and its commit protocol: whole writes under final names, a marker last, markers are the truth.

Layout under ``--output`` (any fsspec URI)::

    manifest.json                 written once, create-only; a rerun must match it
    shards/<shard_id>.parquet     one row per image
    errors/<shard_id>.jsonl       images that could not be labelled
    pq/<shard_id>.json            PQ partials (integers), only when some image had ground truth
    stats/<shard_id>.json         label statistics partials (summable counts)
    _done/<shard_id>              written last: the shard is committed iff this exists

No rename is assumed (object stores have none). A shard without a marker is redone from scratch, overwriting.
A whole write is idempotent, so one failing with a transient storage error is retried (``segcore.io.retry``); the
marker is written only after every other file of the shard, and a write that fails for good raises, so nothing
is marked.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Mapping

import fsspec
from fsspec.implementations.local import LocalFileSystem

from segcore.io.retry import RetryPolicy, call_with_retries

MANIFEST = "manifest.json"
VOLATILE_MANIFEST_KEYS = ("created", "code_version")  # may differ between a run and its rerun


class ManifestMismatch(ValueError):
    """The output holds another job's manifest; the message lists the differing keys."""


@dataclass(frozen=True)
class Output:
    """An output folder: its filesystem, root path, and the paths of every file of the layout."""

    fs: fsspec.AbstractFileSystem
    root: str

    @classmethod
    def open(cls, uri: str, storage_options: Mapping | None = None) -> "Output":
        """Resolves ``uri`` (local path or any fsspec URI) once."""
        fs, root = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
        return cls(fs, root.rstrip("/"))

    def path(self, *parts: str) -> str:
        """Joins parts under the root."""
        return "/".join([self.root, *parts])

    def data_path(self, shard_id: str) -> str:
        return self.path("shards", f"{shard_id}.parquet")

    def errors_path(self, shard_id: str) -> str:
        return self.path("errors", f"{shard_id}.jsonl")

    def partials_path(self, shard_id: str) -> str:
        return self.path("pq", f"{shard_id}.json")

    def stats_path(self, shard_id: str) -> str:
        return self.path("stats", f"{shard_id}.json")

    def marker_path(self, shard_id: str) -> str:
        return self.path("_done", shard_id)


def write_whole(output: Output, path: str, data: bytes, retry: RetryPolicy | None = None) -> None:
    """Writes ``data`` in one call under its final name (one PUT on object stores), retried on transient errors.

    Args:
        retry: attempts and backoff; None: ``RetryPolicy.from_env()``.

    Raises:
        segcore.io.retry.RetriesExhausted: every attempt failed with a transient error.
        OSError: a permanent storage error (permissions, ...), at once.
    """
    def write() -> None:
        if isinstance(output.fs, LocalFileSystem):
            output.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        output.fs.pipe_file(path, data)

    call_with_retries(write, f"write {output.fs.unstrip_protocol(path)}", retry)


def create_only(output: Output, path: str, data: bytes) -> None:
    """Writes ``data`` only if ``path`` does not exist yet (atomic: ``O_EXCL`` locally, If-None-Match on S3).

    Raises:
        FileExistsError: something is already there.
    """
    if isinstance(output.fs, LocalFileSystem):
        output.fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        with open(path, "xb") as f:
            f.write(data)
        return
    output.fs.pipe_file(path, data, mode="create")


def commit_shard(
    output: Output,
    shard_id: str,
    data: bytes,
    rows: int,
    errors: bytes | None = None,
    partials: bytes | None = None,
    stats: bytes | None = None,
    retry: RetryPolicy | None = None,
) -> dict:
    """Commits a shard: data file, then errors, PQ partials and statistics, then the marker, each written whole.

    An errors, partials or statistics file this commit does not write is removed if one is there (from an
    earlier attempt, or a job the output was overwritten from), so every file of the shard is this commit's.

    The marker records what it vouches for (row count, size and sha256 of the data file) so a verifier can check
    the data file is the one committed. Returns the marker's content. Each write is retried on transient errors
    (``retry``; None: ``RetryPolicy.from_env()``).

    Raises:
        segcore.io.retry.RetriesExhausted, OSError: a write failed for good; the marker was not written.
    """
    retry = retry or RetryPolicy.from_env()
    write_whole(output, output.data_path(shard_id), data, retry)
    for content, path in ((errors or None, output.errors_path(shard_id)),
                          (partials, output.partials_path(shard_id)), (stats, output.stats_path(shard_id))):
        if content is not None:
            write_whole(output, path, content, retry)
        elif output.fs.exists(path):  # left by an earlier attempt or an overwritten job: it would mislead readers
            output.fs.rm(path)
    marker = {
        "shard_id": shard_id,
        "rows": rows,
        "data_bytes": len(data),
        "data_sha256": hashlib.sha256(data).hexdigest(),
        "errors": bool(errors),
        "partials": partials is not None,
        "stats": stats is not None,
    }
    write_whole(output, output.marker_path(shard_id), json.dumps(marker, sort_keys=True).encode(), retry)
    return marker


def committed_shards(output: Output) -> set[str]:
    """The ids of committed shards: the names under ``_done/`` (data files without a marker do not count)."""
    folder = output.path("_done")
    if not output.fs.exists(folder):
        return set()
    return {path.rstrip("/").rsplit("/", 1)[-1] for path in output.fs.ls(folder, detail=False)}


def read_marker(output: Output, shard_id: str) -> dict:
    """The content of a shard's marker."""
    return json.loads(output.fs.cat_file(output.marker_path(shard_id)))


def claim_output(output: Output, manifest: Mapping, overwrite: bool = False) -> str:
    """Writes the job's manifest, or checks a rerun's manifest equals the one there.

    Returns:
        "created" (a new job), "resumed" (same manifest: committed shards will be skipped) or "overwritten"
        (``overwrite``: the old markers are removed first, so every shard is redone, whatever the old job was).

    Raises:
        ManifestMismatch: the output holds a different job's manifest and ``overwrite`` is False; the message
            names the keys that differ.
        FileExistsError: another job created the manifest at the same moment (create-only write lost the race).
    """
    path = output.path(MANIFEST)
    document = json.dumps(manifest, sort_keys=True).encode()  # no indent: the C encoder, 4x faster at 100k shards
    if not output.fs.exists(path):
        create_only(output, path, document)
        return "created"
    existing = json.loads(output.fs.cat_file(path))
    differing = sorted(
        key
        for key in set(existing) | set(manifest)
        if key not in VOLATILE_MANIFEST_KEYS and existing.get(key) != manifest.get(key)
    )
    if not differing and not overwrite:
        return "resumed"
    if not overwrite:
        raise ManifestMismatch(
            f"Expected the manifest at {path} to describe this job, but {differing} differ; "
            f"use another --output, or --overwrite to replace it"
        )
    markers = output.path("_done")
    if output.fs.exists(markers):  # the old job's markers must not vouch for the new job's shards
        output.fs.rm(markers, recursive=True)
    write_whole(output, path, document)
    return "overwritten"
