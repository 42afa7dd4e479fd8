"""Reads a sample's image back from the ``source`` string of its output row: ``<shard uri>#<member>``.

The member is the path under the folder (folder shards), the tar member name (tar shards) or the row index
(Parquet shards), as ``segcore.io.shards`` writes it. ``read_sources`` reads many at once, opening each tar or
Parquet file once; a missing file, member or row raises ``SourceNotFound`` naming the source.
"""

from __future__ import annotations

import logging
import tarfile
from collections.abc import Iterable, Mapping
from typing import Any

import pyarrow.parquet as pq

from segcore.io.shards import MAX_MEMBER_BYTES, PARQUET_SUFFIXES, TAR_SUFFIXES, _image_column
from segcore.io.storage import Folder, filesystem

logger = logging.getLogger(__name__)


class SourceNotFound(FileNotFoundError):
    """A source whose file, tar member or Parquet row does not exist; the message names the source."""


def split_source(source: str) -> tuple[str, str, str]:
    """Splits a source string into ``(kind, shard uri, member)``; kind is "tar", "parquet" or "folder".

    The split is at the first ``#`` that follows a tar or Parquet file name, else at the first ``#`` (member
    paths under a folder may themselves hold ``#``). A source without ``#`` (rows imported from COCO
    predictions name their image file) is a file in its folder.
    """
    if "#" not in source:
        folder, _, name = source.rpartition("/")
        return "folder", folder or ".", name
    cuts = [index for index, char in enumerate(source) if char == "#"]
    for cut in cuts:
        name = source[:cut].split("?", 1)[0].lower()
        if name.endswith(TAR_SUFFIXES):
            return "tar", source[:cut], source[cut + 1 :]
        if name.endswith(PARQUET_SUFFIXES):
            return "parquet", source[:cut], source[cut + 1 :]
    return "folder", source[: cuts[0]], source[cuts[0] + 1 :]


def read_source(source: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    """The encoded image of one source (see :func:`read_sources` to read many).

    Raises:
        SourceNotFound: the shard file, member or row does not exist (the message names the source).
        ValueError: a malformed source (no ``#``, or a Parquet member that is not a row index).
    """
    return read_sources([source], storage_options)[source]


def read_sources(
    sources: Iterable[str], storage_options: Mapping[str, Any] | None = None, missing_ok: bool = False
) -> dict[str, bytes]:
    """The encoded images of many sources, each tar or Parquet file opened once.

    Args:
        sources: source strings of output rows (any mix of shard kinds).
        storage_options: passed to the fsspec filesystem.
        missing_ok: leave sources that cannot be found out of the result instead of raising.

    Returns:
        source -> image bytes.

    Raises:
        SourceNotFound: (unless ``missing_ok``) a shard file, member or row does not exist; names the source.
        ValueError: a malformed source, or a shard that cannot be read (not a tar, not Parquet).
        OSError: other storage errors propagate.
    """
    by_shard: dict[tuple[str, str], dict[str, str]] = {}
    for source in dict.fromkeys(sources):
        kind, uri, member = split_source(source)
        by_shard.setdefault((kind, uri), {})[member] = source
    readers = {"tar": _read_tar_members, "parquet": _read_parquet_rows, "folder": _read_folder_members}
    found: dict[str, bytes] = {}
    for (kind, uri), members in by_shard.items():
        try:
            data, reason = readers[kind](uri, list(members), storage_options), "it is not there"
        except FileNotFoundError:
            data, reason = {}, f"{uri} does not exist"
        for member, source in members.items():
            if member in data:
                found[source] = data[member]
            elif missing_ok:
                logger.debug("source %s not found: %s", source, reason)
            else:
                raise SourceNotFound(f"Expected the image of {source} in {kind} shard {uri}, but {reason}")
    return found


def _read_folder_members(uri: str, members: list[str], storage_options) -> dict[str, bytes]:
    """The files of a folder shard that exist."""
    folder = Folder(uri, storage_options)
    found = {}
    for member in members:
        try:
            found[member] = folder.read_bytes(member)
        except FileNotFoundError:
            continue
    return found


def _member_name(name: str) -> str:
    """A tar member name as the shard reader reports it (leading ``./`` removed)."""
    while name.startswith("./"):
        name = name[2:]
    return name


def _read_tar_members(uri: str, members: list[str], storage_options) -> dict[str, bytes]:
    """The wanted regular-file members of a tar, in one streaming pass that stops once all are found."""
    wanted = {_member_name(m): m for m in members}
    fs, path = filesystem(uri, storage_options)
    found: dict[str, bytes] = {}
    with fs.open(path, "rb") as stream:
        try:
            with tarfile.open(fileobj=stream, mode="r|*") as archive:
                while len(found) < len(wanted) and (member := archive.next()) is not None:
                    archive.members = []  # streaming mode keeps every header otherwise
                    name = wanted.get(_member_name(member.name))
                    if name is not None and member.isreg() and member.size <= MAX_MEMBER_BYTES:
                        found[name] = archive.extractfile(member).read()
        except (tarfile.TarError, EOFError) as error:
            raise ValueError(f"{uri} is not a readable tar: {error}") from error
    return found


def _read_parquet_rows(uri: str, members: list[str], storage_options) -> dict[str, bytes]:
    """The image bytes of the wanted rows of a Parquet shard, reading only the row groups that hold them.

    Raises:
        ValueError: a member that is not a row index.
    """
    rows = {}
    for member in members:
        if not member.isdigit():
            raise ValueError(f"Expected a row index after '#' for Parquet shard {uri}, but got {member!r}")
        rows[int(member)] = member
    fs, path = filesystem(uri, storage_options)
    found: dict[str, bytes] = {}
    with fs.open(path, "rb") as file:
        parquet = pq.ParquetFile(file)
        column, is_struct = _image_column(parquet.schema_arrow, uri)
        start = 0
        for group in range(parquet.metadata.num_row_groups):
            size = parquet.metadata.row_group(group).num_rows
            inside = [row for row in rows if start <= row < start + size]
            if inside:
                images = parquet.read_row_group(group, columns=[column]).column(column)
                images = images.combine_chunks().field("bytes") if is_struct else images
                for row in inside:
                    value = images[row - start].as_py()
                    if value is not None:
                        found[rows[row]] = value
            start += size
    return found
