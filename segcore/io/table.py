"""The per-shard Parquet table: one row per image with its id-map PNG and segments, schema versioned in the file."""

from __future__ import annotations

import io
from typing import Mapping, Sequence

import pyarrow as pa
import pyarrow.parquet as pq

SCHEMA_VERSION = "1"
VERSION_KEY = b"segcore.schema_version"
STATUS_OK = "ok"

SEGMENT_TYPE = pa.struct(
    [
        ("id", pa.int32()),
        ("category_id", pa.int32()),
        ("isthing", pa.bool_()),
        ("area", pa.int64()),
        ("bbox", pa.list_(pa.int32(), 4)),
        ("score", pa.float32()),
    ]
)
SCHEMA = pa.schema(
    [
        ("image_id", pa.string()),
        ("source", pa.string()),
        ("width", pa.int32()),
        ("height", pa.int32()),
        ("panoptic_png", pa.binary()),
        ("segments", pa.list_(SEGMENT_TYPE)),
        ("status", pa.string()),
        ("error", pa.string()),
        ("model", pa.string()),
    ],
    metadata={VERSION_KEY: SCHEMA_VERSION.encode()},
)


class TableError(ValueError):
    """A shard table that is not this project's, or of another schema version; the message names the file."""


def image_row(
    image_id: str,
    source: str,
    width: int,
    height: int,
    panoptic_png: bytes,
    segments: Sequence[Mapping],
    model: str,
    status: str = STATUS_OK,
    error: str | None = None,
) -> dict:
    """A row for a labelled image; ``segments`` are dicts with the SEGMENT_TYPE fields (extra keys ignored).

    A labelled image may still carry an error status, e.g. ``bad_ground_truth``: the prediction is kept, and
    the reason says what was wrong with the image's ground truth.
    """
    return {
        "image_id": image_id,
        "source": source,
        "width": width,
        "height": height,
        "panoptic_png": panoptic_png,
        "segments": [{name: s[name] for name in SEGMENT_TYPE.names} for s in segments],
        "status": status,
        "error": error,
        "model": model,
    }


def error_row(image_id: str, source: str, status: str, error: str, model: str) -> dict:
    """A row for an image that could not be labelled: no map, no segments, ``status`` and the reason.

    Raises:
        ValueError: ``status`` is "ok" or the reason is empty.
    """
    if status == STATUS_OK or not error:
        raise ValueError(f"Expected an error status other than 'ok' and a reason, but got {status!r}, {error!r}")
    return {
        "image_id": image_id, "source": source, "width": None, "height": None, "panoptic_png": None,
        "segments": None, "status": status, "error": error, "model": model,
    }


def rows_to_table(rows: Sequence[Mapping]) -> pa.Table:
    """Builds the shard table (exactly SCHEMA, version in its metadata) from rows."""
    return pa.Table.from_pylist(list(rows), schema=SCHEMA)


def table_to_parquet(table: pa.Table, compression: str = "zstd") -> bytes:
    """Serialises a shard table to Parquet bytes, to be written whole under the final name.

    PNG bytes are already compressed, so the column codec mainly shrinks the segment lists.
    """
    sink = io.BytesIO()
    pq.write_table(table, sink, compression=compression)
    return sink.getvalue()


def check_schema(schema: pa.Schema, where: str) -> None:
    """Checks a file's schema is this project's current one.

    Raises:
        TableError: another schema version, or different columns; the message names ``where``.
    """
    version = (schema.metadata or {}).get(VERSION_KEY, b"").decode() or None
    if version != SCHEMA_VERSION:
        raise TableError(f"Expected schema version {SCHEMA_VERSION} in {where}, but got {version!r}")
    if not schema.remove_metadata().equals(SCHEMA.remove_metadata()):
        raise TableError(f"Expected the columns {SCHEMA.names} with their types in {where}, but got {schema}")


def read_table(data: bytes, where: str) -> pa.Table:
    """Reads Parquet bytes written by :func:`table_to_parquet` and checks their schema.

    Raises:
        TableError: not Parquet, or not this schema; the message names ``where``.
    """
    try:
        table = pq.read_table(io.BytesIO(data))
    except (pa.ArrowInvalid, OSError) as error:  # in-memory bytes: an OSError is a corrupt page, not I/O
        raise TableError(f"Expected a Parquet file at {where}, but it cannot be read: {error}") from error
    check_schema(table.schema, where)
    return table
