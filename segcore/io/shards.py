"""Shard listing (brace ranges, globs, folders) and shard readers (WebDataset tar, image folder, Parquet) over fsspec.

A shard is the unit of work and of resumption: ``list_shards`` turns one input URI into an ordered list of
``ShardSpec`` with stable ids, and ``read_shard`` streams its ``Sample`` records. Per-image problems (a hostile or
missing member, bad JSON, a duplicate key) become samples with ``error`` set, so the shard goes on; a shard that
cannot be read as a whole (not a tar, truncated, not Parquet) raises ``ShardError`` naming the URI.
Images are never decoded here; that is a later stage.
"""

from __future__ import annotations

import hashlib
import json
import logging
import posixpath
import re
import tarfile
import zlib
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from typing import Any, BinaryIO

import pyarrow as pa
import pyarrow.parquet as pq

from segcore.io.storage import Folder, filesystem, join, redact_uri

logger = logging.getLogger(__name__)

# the formats Pillow reads (the first frame of an animation or a multi-page file), for folders and tars alike
IMAGE_EXTENSIONS = ("jpg", "jpeg", "jpe", "png", "webp", "gif", "bmp", "tif", "tiff", "avif", "jp2", "j2k", "ppm",
                    "pgm", "pbm", "pnm", "tga")
TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz")
PARQUET_SUFFIXES = (".parquet",)
SHARD_KINDS = ("tar", "folder", "parquet")
PARQUET_IMAGE_COLUMNS = ("image", "jpg", "png", "image_bytes", "bytes")
PARQUET_KEY_COLUMNS = ("key", "__key__", "image_id", "id")
PARQUET_BATCH_ROWS = 64  # bounds memory: at most this many encoded images are held at once
MAX_MEMBER_BYTES = 256 * 2**20  # a larger tar member is refused unread, not loaded into memory

_BRACE = re.compile(r"\{([^{}]*)\}")
_RANGE = re.compile(r"^(-?\d+)\.\.(-?\d+)$")
_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]+")


GROUND_TRUTH_EXTENSION = "panoptic.png"  # a tar sample's ground-truth id map; its segments_info is in the .json


class ShardError(ValueError):
    """A shard that cannot be read as a whole (not a tar, truncated, not Parquet); the message names its URI."""


@dataclass(frozen=True)
class ShardSpec:
    """One unit of work of a job.

    Attributes:
        shard_id: stable, filesystem-safe id, unique within the job (names the output files of the shard).
        kind: one of ``SHARD_KINDS``.
        uri: the tar or Parquet file, or the root of the folder for folder shards.
        members: for folder shards, the URIs of the images of this shard (sorted); empty otherwise.
    """

    shard_id: str
    kind: str
    uri: str
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Sample:
    """One image record read from a shard, not decoded.

    Attributes:
        key: the image's key within the shard (WebDataset key, path under the folder root without extension, or
            the Parquet key column / row index).
        source: shard URI + "#" + member name (tar member, path under the folder, or Parquet row index).
        image_bytes: the encoded image; None when ``error`` is set.
        metadata: the parsed ``.json`` member (tar shards), else None.
        error: why this sample cannot be used, or None when it is fine.
        panoptic_png: the ``<key>.panoptic.png`` member (ground-truth id map, COCO panoptic colours; its
            segments_info is in the ``.json`` member), else None.
    """

    key: str
    source: str
    image_bytes: bytes | None = None
    metadata: dict | None = None
    error: str | None = None
    panoptic_png: bytes | None = None


# ----------------------------------------------------------------------------------------------- listing


def expand_braces(pattern: str) -> list[str]:
    """Expands shell-style braces: ranges ``{000..123}`` (zero padding kept) and lists ``{a,b}``, in order.

    Braces without ``..`` or ``,`` are kept literally; nested braces are not supported.
    """
    match = _BRACE.search(pattern)
    if match is None:
        return [pattern]
    prefix, rest = pattern[: match.start()], pattern[match.end() :]
    tails = expand_braces(rest)
    return [prefix + option + tail for option in _brace_options(match.group(1)) for tail in tails]


def _brace_options(body: str) -> list[str]:
    """The alternatives of one brace body: a numeric range, a comma list, or the literal ``{body}``."""
    bounds = _RANGE.match(body)
    if bounds:
        first, last = bounds.groups()
        padded = any(len(n.lstrip("-")) > 1 and n.lstrip("-").startswith("0") for n in (first, last))
        width = max(len(first), len(last)) if padded else 0
        step = 1 if int(last) >= int(first) else -1
        return [f"{n:0{width}d}" for n in range(int(first), int(last) + step, step)]
    if "," in body:
        return body.split(",")
    return ["{" + body + "}"]


def _has_magic(uri: str) -> bool:
    """Glob characters in a URI; in an http(s) URL ``?`` starts the query, and only the path is looked at."""
    if uri.lower().startswith(("http://", "https://")):
        return any(char in uri.split("?", 1)[0] for char in "*[")
    return any(char in uri for char in "*?[")


def _protocol_prefix(uri: str) -> str:
    """``"s3://"`` for ``"s3://b/k"`` (chained URLs keep their chain); ``""`` for local paths."""
    return uri[: uri.index("://") + 3] if "://" in uri else ""


def _glob(pattern: str, storage_options: Mapping[str, Any] | None) -> list[str]:
    """The files matching an fsspec glob, as URIs with the pattern's protocol."""
    fs, path = filesystem(pattern, storage_options)
    prefix = _protocol_prefix(pattern)
    return [prefix + found for found in fs.glob(path)]


def expand_input(uri: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Expands an input URI into the sorted, de-duplicated URIs it names.

    Brace ranges and lists are expanded without listing storage (the reader checks existence); each expanded
    pattern with glob characters (``* ? [``) is listed once. The protocol is kept (``s3://b/x.tar``); local paths
    stay local paths.

    Args:
        uri: e.g. ``"s3://bucket/corpus-{00000..00999}.tar"``, ``"gs://b/*.tar"``, ``"/data/images"``.
        storage_options: passed to the fsspec filesystem (credentials, endpoint).

    Returns:
        The URIs, sorted and without duplicates.

    Raises:
        ValueError: a glob matched nothing (the message names the URI).
    """
    found: set[str] = set()
    for pattern in expand_braces(uri):
        found.update(_glob(pattern, storage_options) if _has_magic(pattern) else [pattern])
    if not found:
        raise ValueError(f"Expected `{redact_uri(uri)}` to match at least one file, but it matched none")
    return sorted(found)


def _file_name(uri: str) -> str:
    """The last path component of a URI, without a query string."""
    return uri.split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]


def _kind_of(uri: str) -> str | None:
    """``"tar"`` or ``"parquet"`` from the file name's suffix, or None."""
    name = _file_name(uri).lower()
    if name.endswith(TAR_SUFFIXES):
        return "tar"
    if name.endswith(PARQUET_SUFFIXES):
        return "parquet"
    return None


def _safe_id(name: str) -> str:
    """A filesystem-safe id from a name: unsafe characters become ``_``; never empty or dot-leading."""
    return _UNSAFE_ID_CHARS.sub("_", name).lstrip(".") or "shard"


def _file_shard_id(uri: str) -> str:
    """The id of a file shard: its file name without the shard suffix."""
    name = _file_name(uri)
    for suffix in TAR_SUFFIXES + PARQUET_SUFFIXES:
        if name.lower().endswith(suffix):
            return _safe_id(name[: -len(suffix)])
    return _safe_id(name)


def _is_image_name(name: str) -> bool:
    return name.rsplit(".", 1)[-1].lower() in IMAGE_EXTENSIONS if "." in name else False


def list_folder_images(uri: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """All images under a folder, recursively (extensions ``IMAGE_EXTENSIONS``, any case), as sorted URIs.

    Other files are skipped and said to be: one warning with their count per extension and the first names.
    """
    fs, root = filesystem(uri, storage_options)
    root = root.rstrip("/")
    base = uri.rstrip("/")
    found = sorted(path[len(root) + 1 :] for path in fs.find(root))
    names = [name for name in found if _is_image_name(name)]
    skipped = [name for name in found if not _is_image_name(name)]
    if skipped:
        kinds = Counter("." + name.rsplit(".", 1)[-1].lower() if "." in name.rsplit("/", 1)[-1] else "(none)"
                        for name in skipped)
        logger.warning("%s: %d files skipped, not of an image format Pillow reads (%s): %s%s", redact_uri(base),
                       len(skipped),
                       ", ".join(f"{kind} x{count}" for kind, count in kinds.most_common()),
                       ", ".join(skipped[:10]), " ..." if len(skipped) > 10 else "")
    return [join(base, name) for name in names]


def _folder_shards(uri: str, shard_size: int, storage_options: Mapping[str, Any] | None) -> list[ShardSpec]:
    """A folder cut into consecutive shards of ``shard_size`` images of its sorted listing."""
    images = list_folder_images(uri, storage_options)
    base = uri.rstrip("/")
    return [
        ShardSpec(f"folder-{index:05d}", "folder", base, tuple(images[start : start + shard_size]))
        for index, start in enumerate(range(0, len(images), shard_size))
    ]


def _shards_of(uri: str, shard_size: int, storage_options: Mapping[str, Any] | None) -> list[ShardSpec]:
    """The shards of one expanded URI: one per tar or Parquet file, or a folder's images cut in shards."""
    kind = _kind_of(uri)
    if kind is not None:
        return [ShardSpec(_file_shard_id(uri), kind, uri)]
    fs, path = filesystem(uri, storage_options)
    if fs.isdir(path):
        return _folder_shards(uri, shard_size, storage_options)
    raise ValueError(
        f"Expected `{redact_uri(uri)}` to be a file ending in {', '.join(TAR_SUFFIXES + PARQUET_SUFFIXES)} "
        "or a folder of images, but it is neither"
    )


def _digest(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()[:8]


def _with_unique_ids(specs: list[ShardSpec]) -> list[ShardSpec]:
    """Appends a digest of the URI to ids that several shards share, so ids stay stable and unique.

    Raises:
        ValueError: ids still collide (names the id).
    """
    counts = Counter(spec.shard_id for spec in specs)
    unique = [
        replace(spec, shard_id=f"{spec.shard_id}-{_digest(spec.uri)}") if counts[spec.shard_id] > 1 else spec
        for spec in specs
    ]
    id_counts = Counter(spec.shard_id for spec in unique)
    clashing = [shard_id for shard_id, count in id_counts.items() if count > 1]
    if clashing:
        raise ValueError(f"Expected shard ids to be unique, but got {clashing[0]!r} more than once")
    return unique


def list_shards(
    input_uri: str, shard_size: int = 1000, storage_options: Mapping[str, Any] | None = None
) -> list[ShardSpec]:
    """Lists the shards of a job's input, in a deterministic order with stable, unique ids.

    A ``.tar`` (also ``.tar.gz``, ``.tgz``) path, glob or brace range gives one shard per tar; a ``.parquet`` one
    per file; a folder gives all images under it (recursively, sorted) cut into shards of ``shard_size`` images
    with ids ``folder-00000``, ``folder-00001``, ... Ids that two inputs share get a digest of the URI appended.

    Args:
        input_uri: any fsspec URI or local path, with optional braces / glob characters.
        shard_size: images per folder shard; ignored for tar and Parquet shards.
        storage_options: passed to the fsspec filesystem.

    Returns:
        The shards, in input order (sorted URIs; sorted listing within a folder).

    Raises:
        ValueError: ``shard_size`` is not a positive int, the input matches nothing, or a match is neither a
            shard file nor a folder (the message names the URI).
    """
    if not isinstance(shard_size, int) or isinstance(shard_size, bool) or shard_size < 1:
        raise ValueError(f"Expected `shard_size` to be a positive int, but got {shard_size!r}")
    uris = expand_input(input_uri, storage_options)
    specs = [spec for uri in uris for spec in _shards_of(uri, shard_size, storage_options)]
    if not specs:
        raise ValueError(f"Expected `{input_uri}` to hold tar or Parquet shards or images, but found none")
    return _with_unique_ids(specs)


# ----------------------------------------------------------------------------------------------- reading


def read_shard(spec: ShardSpec, storage_options: Mapping[str, Any] | None = None) -> Iterator[Sample]:
    """Streams the samples of a shard, without decoding images.

    Args:
        spec: from ``list_shards``.
        storage_options: passed to the fsspec filesystem.

    Yields:
        One ``Sample`` per image (or per refused member / broken key, with ``error`` set).

    Raises:
        ShardError: the shard cannot be read as a whole (raised after the samples read before the fault).
        ValueError: ``spec.kind`` is not one of ``SHARD_KINDS``.
        OSError: storage errors propagate, so the shard can be retried.
    """
    readers = {"tar": _read_tar, "folder": _read_folder, "parquet": _read_parquet}
    if spec.kind not in readers:
        raise ValueError(f"Expected `spec.kind` to be one of {SHARD_KINDS}, but got {spec.kind!r} "
                         f"({redact_uri(spec.uri)})")
    return readers[spec.kind](spec, storage_options)


# ---- folder


def _read_folder(spec: ShardSpec, storage_options: Mapping[str, Any] | None) -> Iterator[Sample]:
    """Reads each member whole; a missing member becomes an error sample."""
    folder = Folder(spec.uri, storage_options)
    root = spec.uri.rstrip("/") + "/"
    for member in spec.members:
        name = member.removeprefix(root)
        key, source = posixpath.splitext(name)[0], f"{redact_uri(spec.uri)}#{name}"
        try:
            yield Sample(key, source, image_bytes=folder.read_bytes(name))
        except FileNotFoundError as error:
            yield Sample(key, source, error=str(error))


# ---- parquet


def _image_column(schema: pa.Schema, uri: str) -> tuple[str, bool]:
    """The image column's name and whether it is an HF-style struct with a ``bytes`` field.

    Raises:
        ShardError: no usable image column (lists the columns found).
    """
    for name in PARQUET_IMAGE_COLUMNS:
        if name not in schema.names:
            continue
        kind = schema.field(name).type
        if pa.types.is_binary(kind) or pa.types.is_large_binary(kind):
            return name, False
        if pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0:
            return name, True
    found = ", ".join(f"{field.name}: {field.type}" for field in schema)
    raise ShardError(
        f"Expected {uri} to have a binary image column among {PARQUET_IMAGE_COLUMNS} (or a struct `image` with "
        f"a `bytes` field), but got columns [{found}]"
    )


def _is_string(kind: pa.DataType) -> bool:
    return pa.types.is_string(kind) or pa.types.is_large_string(kind)


def _key_column(schema: pa.Schema) -> str | None:
    """The first string column among ``PARQUET_KEY_COLUMNS``, or None (keys are then row indices)."""
    for name in PARQUET_KEY_COLUMNS:
        if name in schema.names and _is_string(schema.field(name).type):
            return name
    return None


def _parquet_samples(parquet: pq.ParquetFile, uri: str) -> Iterator[Sample]:
    """Samples from a Parquet file, read in record batches of ``PARQUET_BATCH_ROWS`` rows."""
    image_name, is_struct = _image_column(parquet.schema_arrow, uri)
    key_name = _key_column(parquet.schema_arrow)
    columns = [image_name] + ([key_name] if key_name else [])
    row = 0
    for batch in parquet.iter_batches(batch_size=PARQUET_BATCH_ROWS, columns=columns):
        images = batch.column(image_name)
        images = images.field("bytes") if is_struct else images
        keys = batch.column(key_name).to_pylist() if key_name else [None] * batch.num_rows
        for offset, (image, key) in enumerate(zip(images.to_pylist(), keys)):
            index = row + offset
            key, source = key if key is not None else str(index), f"{uri}#{index}"
            if image is None:
                yield Sample(key, source, error=f"no image bytes in column `{image_name}` of {source}")
            else:
                yield Sample(key, source, image_bytes=image)
        row += batch.num_rows


def _read_parquet(spec: ShardSpec, storage_options: Mapping[str, Any] | None) -> Iterator[Sample]:
    fs, path = filesystem(spec.uri, storage_options)
    with fs.open(path, "rb") as file:
        try:
            yield from _parquet_samples(pq.ParquetFile(file), redact_uri(spec.uri))
        except pa.ArrowInvalid as error:
            raise ShardError(f"{redact_uri(spec.uri)} is not a readable Parquet file: {error}") from error


# ---- tar (WebDataset)


class _StrictTarInfo(tarfile.TarInfo):
    """Turns a truncated or garbled header after the first member into an error.

    ``tarfile`` silently ends the archive there; only a zero block (the end-of-archive marker) may end it.
    """

    @classmethod
    def fromtarfile(cls, archive):
        try:
            return super().fromtarfile(archive)
        except tarfile.EOFHeaderError:
            raise
        except (tarfile.EmptyHeaderError, tarfile.TruncatedHeaderError) as error:
            raise tarfile.ReadError(f"unexpected end of data at offset {archive.offset}: {error}") from None
        except tarfile.InvalidHeaderError as error:
            raise tarfile.ReadError(f"invalid header at offset {archive.offset}: {error}") from None


def _refusal(member: tarfile.TarInfo) -> str | None:
    """Why a member is refused (escaping name, link, device), or None when it is a safe regular file."""
    parts = re.split(r"[/\\]", member.name)
    if member.name.startswith(("/", "\\")):
        return f"refused member {member.name!r}: absolute path"
    if ".." in parts:
        return f"refused member {member.name!r}: `..` in path"
    if member.issym() or member.islnk():
        return f"refused member {member.name!r}: link to {member.linkname!r}"
    if not member.isreg():
        return f"refused member {member.name!r}: not a regular file (type {member.type!r})"
    return None


def split_member_name(name: str) -> tuple[str, str]:
    """WebDataset's split: ``"dir/000123.seg.png"`` -> ``("dir/000123", "seg.png")``; extension lower-cased."""
    while name.startswith("./"):
        name = name[2:]
    directory, base = posixpath.split(name)
    stem, _, extension = base.partition(".")
    return posixpath.join(directory, stem), extension.lower()


class _KeyGroup:
    """The consecutive members of one WebDataset key, becoming one sample."""

    def __init__(self, key: str, uri: str, duplicate: bool):
        self.key, self.uri = key, uri
        self.images: list[tuple[str, bytes]] = []
        self.metadata_member: tuple[str, bytes] | None = None
        self.panoptic_png: bytes | None = None
        self.error = f"duplicate key {key!r}: it appeared earlier in {uri}" if duplicate else None

    def add(self, member: tarfile.TarInfo, extension: str, archive: tarfile.TarFile) -> None:
        """Reads the member if it is the image or the JSON metadata; other members are skipped unread."""
        if extension not in IMAGE_EXTENSIONS and extension not in ("json", GROUND_TRUTH_EXTENSION):
            return
        if member.size > MAX_MEMBER_BYTES:
            self.error = self.error or f"member {member.name!r} too large: {member.size} > {MAX_MEMBER_BYTES} bytes"
            return
        data = archive.extractfile(member).read()
        if extension == GROUND_TRUTH_EXTENSION:
            self.panoptic_png = data
        elif extension != "json":
            self.images.append((member.name, data))
        elif self.metadata_member is None:
            self.metadata_member = (member.name, data)
        else:
            self.error = self.error or f"duplicate metadata member {member.name!r}"

    def _metadata(self) -> dict | None:
        """The parsed JSON member, or None.

        Raises:
            ValueError: not valid JSON, or not an object (names the member).
        """
        if self.metadata_member is None:
            return None
        name, data = self.metadata_member
        try:
            metadata = json.loads(data)
        except ValueError as error:
            raise ValueError(f"bad JSON in member {name!r}: {error}") from None
        if not isinstance(metadata, dict):
            raise ValueError(f"Expected member {name!r} to hold a JSON object, but got {type(metadata).__name__}")
        return metadata

    def sample(self) -> Sample:
        """The sample of this key, or an error sample saying what is wrong with it."""
        member = self.images[0][0] if len(self.images) == 1 else self.key
        source = f"{self.uri}#{member}"
        if self.error:
            return Sample(self.key, source, error=self.error)
        if len(self.images) != 1:
            found = ", ".join(name for name, _ in self.images)
            return Sample(self.key, source, error=f"multiple image members: {found}" if found else "no image member")
        try:
            metadata = self._metadata()
        except ValueError as error:
            return Sample(self.key, source, error=str(error))
        return Sample(self.key, source, image_bytes=self.images[0][1], metadata=metadata,
                      panoptic_png=self.panoptic_png)


def _tar_samples(stream: BinaryIO, uri: str) -> Iterator[Sample]:
    """Samples from a WebDataset-style tar stream, grouping consecutive members by key."""
    seen: set[str] = set()
    group: _KeyGroup | None = None
    with tarfile.open(fileobj=stream, mode="r|*", tarinfo=_StrictTarInfo) as archive:
        while (member := archive.next()) is not None:
            archive.members = []  # streaming mode keeps every header otherwise
            if member.isdir():
                continue
            refusal = _refusal(member)
            if refusal:
                yield Sample(member.name, f"{uri}#{member.name}", error=refusal)
                continue
            key, extension = split_member_name(member.name)
            if group is None or group.key != key:
                if group is not None:
                    yield group.sample()
                group = _KeyGroup(key, uri, duplicate=key in seen)
                seen.add(key)
            group.add(member, extension, archive)
    if group is not None:
        yield group.sample()


def _read_tar(spec: ShardSpec, storage_options: Mapping[str, Any] | None) -> Iterator[Sample]:
    fs, path = filesystem(spec.uri, storage_options)
    with fs.open(path, "rb") as stream:
        try:
            yield from _tar_samples(stream, redact_uri(spec.uri))
        except (tarfile.TarError, EOFError, zlib.error) as error:
            raise ShardError(f"{redact_uri(spec.uri)} is not a readable tar: {error}") from error
