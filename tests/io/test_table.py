"""The shard Parquet table: schema, version check, rows readable as is by pyarrow and pandas."""

from __future__ import annotations

import io

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from segcore.io.table import (
    SCHEMA,
    SCHEMA_VERSION,
    TableError,
    error_row,
    image_row,
    read_table,
    rows_to_table,
    table_to_parquet,
)

SEGMENTS = [
    {"id": 1, "category_id": 187, "isthing": False, "area": 100, "bbox": [0, 0, 10, 10], "score": 0.5, "extra": 1},
    {"id": 2, "category_id": 1, "isthing": True, "area": 7, "bbox": [3, 4, 2, 5], "score": 0.875},
]


def sample_rows() -> list[dict]:
    return [
        image_row("a", "s3://b/shard.tar#a.jpg", 10, 12, b"\x89PNG...", SEGMENTS, "demo"),
        error_row("b", "s3://b/shard.tar#b.jpg", "decode_error", "truncated JPEG", "demo"),
    ]


def test_rows_round_trip_through_parquet_bytes():
    data = table_to_parquet(rows_to_table(sample_rows()))
    table = read_table(data, "mem://x.parquet")
    rows = table.to_pylist()
    assert rows[0]["segments"][1] == {k: v for k, v in SEGMENTS[1].items()}
    assert "extra" not in rows[0]["segments"][0]
    assert rows[0]["status"] == "ok" and rows[0]["error"] is None and rows[0]["panoptic_png"] == b"\x89PNG..."
    assert rows[1]["status"] == "decode_error" and rows[1]["segments"] is None and rows[1]["width"] is None
    assert pq.read_schema(io.BytesIO(data)).metadata[b"segcore.schema_version"] == SCHEMA_VERSION.encode()


def test_pandas_reads_the_file_unchanged():
    frame = pq.read_table(io.BytesIO(table_to_parquet(rows_to_table(sample_rows())))).to_pandas()
    assert list(frame.columns) == SCHEMA.names and list(frame["image_id"]) == ["a", "b"]
    assert list(frame["segments"][0][0]["bbox"]) == [0, 0, 10, 10]


def test_another_schema_version_or_foreign_file_is_refused_naming_the_file():
    old = rows_to_table(sample_rows()).replace_schema_metadata({b"segcore.schema_version": b"0"})
    with pytest.raises(TableError, match="x.parquet.*|version"):
        read_table(table_to_parquet(old), "s3://b/x.parquet")
    foreign = pa.table({"image_id": ["a"]})
    with pytest.raises(TableError, match="s3://b/y.parquet"):
        read_table(table_to_parquet(foreign), "s3://b/y.parquet")
    with pytest.raises(TableError, match="s3://b/z.parquet"):
        read_table(b"not parquet", "s3://b/z.parquet")


def test_an_error_row_needs_an_error_status_and_a_reason():
    with pytest.raises(ValueError):
        error_row("a", "src", "ok", "reason", "demo")
    with pytest.raises(ValueError):
        error_row("a", "src", "decode_error", "", "demo")
