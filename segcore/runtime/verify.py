"""Checks a jobs.label output shard by shard: each committed file is the one its marker vouches for, and agrees
with itself, its PNGs, the manifest and the shard's partials.

The ``_done/<shard>`` marker is the truth (see :func:`segcore.io.commit.commit_shard`). Per committed shard:

* the data file exists, and its size and sha256 are the marker's; its schema is this project's, of this version;
* its rows are the marker's count (and the manifest's, when it lists the shard's images); image ids are unique;
* every PNG decodes at the row's width x height; its non-VOID ids are exactly the listed segment ids, and each
  segment's area and bbox (COCO ``[x, y, w, h]``, ``w = x_max - x_min + 1``) are the PNG's; categories are the
  manifest's and ``isthing`` agrees with them;
* rows with ``status != "ok"`` are exactly the lines of ``errors/<shard>.jsonl``; ``ok`` rows carry no error;
* ``stats/<shard>.json`` equals the statistics recomputed from the rows (its per-image records are evaluated
  rows, with one predicted instance RLE per thing segment); ``pq/<shard>.json`` is a PQ partial
  of no more images than the rows with a PNG.

Shards of the manifest without a marker are pending (not a problem). A marker of a shard the manifest does not
list is an error. Files of a shard without a marker are warnings: an interrupted write, which a rerun overwrites.
One shard's table is in memory at a time.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Iterable, Mapping

import numpy as np

from segcore.categories import Categories, categories_from_json
from segcore.io.commit import MANIFEST, Output, marker_names
from segcore.io.lock import LOCK
from segcore.io.parallel import map_in_order
from segcore.io.table import STATUS_OK, TableError, read_table
from segcore.metrics.instances import MAX_DETECTIONS
from segcore.metrics.pq import PQPartial
from segcore.panoptic import VOID, segment_stats
from segcore.png import PNGError, decode_ids
from segcore.runtime.truth_use import TruthUse
from segcore.runtime.worker import BAD_GROUND_TRUTH, STATS_VERSION, shard_stats

logger = logging.getLogger(__name__)
ERROR, WARNING = "error", "warning"
COMMITTED, PENDING, UNKNOWN = "committed", "pending", "unknown"
VERIFY_WINDOW = 16  # shards verified at a time
MAX_SEGMENT_MESSAGES = 5  # per image and kind of mismatch; a broken image should not flood the report
ERROR_LINE_KEYS = ("image_id", "source", "status", "error")
SHARD_FILES = (("shards", ".parquet"), ("errors", ".jsonl"), ("pq", ".json"), ("stats", ".json"))


class NotAnOutput(ValueError):
    """The URI holds no jobs.label output: no manifest, or one that cannot be read; the message names the file."""


METRICS = "(metrics.json)"  # the shard id of problems of the reduce's files


@dataclass(frozen=True)
class Problem:
    """One thing wrong with an output: where (shard, image) and what.

    Attributes:
        shard_id: the shard the problem belongs to.
        message: what is wrong, naming the file.
        image_id: the image, when the problem is one row's.
        severity: ``"error"`` (the output is wrong) or ``"warning"`` (harmless, e.g. a leftover of a killed run).
    """

    shard_id: str
    message: str
    image_id: str | None = None
    severity: str = ERROR

    def __str__(self) -> str:
        where = self.shard_id if self.image_id is None else f"{self.shard_id} image {self.image_id}"
        return f"{self.severity}: {where}: {self.message}"


@dataclass
class Report:
    """The verification of an output.

    Attributes:
        uri: the output checked.
        shards: shard id -> ``"committed"``, ``"pending"`` (in the manifest, no marker) or ``"unknown"`` (a
            marker, not in the manifest); manifest order, then unknown shards.
        problems: every problem found, shard by shard.
        images: rows checked in committed shards.
        running: a job held the output's lock: files without a marker may be shards in flight.
    """

    uri: str
    shards: dict[str, str] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    images: int = 0
    running: bool = False

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == ERROR]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == WARNING]

    @property
    def ok(self) -> bool:
        """True when no error was found (warnings allowed)."""
        return not self.errors

    def problems_of(self, shard_id: str) -> list[Problem]:
        return [p for p in self.problems if p.shard_id == shard_id]

    def to_json(self) -> dict:
        """JSON-ready form: totals, and per shard its state and problems."""
        by_shard = {shard_id: {"state": state, "problems": []} for shard_id, state in self.shards.items()}
        for problem in self.problems:
            entry = by_shard.setdefault(problem.shard_id, {"state": None, "problems": []})
            entry["problems"].append({k: v for k, v in asdict(problem).items() if k != "shard_id"})
        states = Counter(self.shards.values())
        return {
            "uri": self.uri, "ok": self.ok, "running": self.running, "images": self.images, "errors": len(self.errors),
            "warnings": len(self.warnings), **{state: states.get(state, 0) for state in (COMMITTED, PENDING, UNKNOWN)},
            "shards": by_shard,
        }

    def summary_line(self) -> str:
        states = Counter(self.shards.values())
        running = " (a job is running there: its shards in flight have files without a marker)" if self.running else ""
        return (f"{states[COMMITTED]} committed shards ({self.images} images) checked, {states[PENDING]} pending, "
                f"{states[UNKNOWN]} unknown: {len(self.errors)} errors, {len(self.warnings)} warnings{running}")


def verify_output(uri: str, storage_options: Mapping | None = None) -> Report:
    """Checks every committed shard of a jobs.label output, ``VERIFY_WINDOW`` shards at a time (reads overlap;
    results are taken in shard order).

    Args:
        uri: the job's ``--output`` (local path or any fsspec URI).
        storage_options: fsspec options (credentials, endpoint).

    Raises:
        NotAnOutput: no ``manifest.json`` at ``uri``, or one that is not a jobs.label manifest.
        OSError: storage failed (a missing file of a committed shard is a problem, not an exception).
    """
    output = Output.open(uri, storage_options)
    manifest = read_manifest(output)
    categories = categories_from_json(manifest)
    entries = {entry["shard_id"]: entry for entry in manifest["shards"]}
    committed = marker_names(output)  # every marker, valid or not: an invalid one is reported by name
    report = Report(uri, running=output.fs.exists(output.path(LOCK)))
    report.shards = {shard_id: COMMITTED if shard_id in committed else PENDING for shard_id in entries}
    for shard_id in sorted(committed - set(entries)):
        report.shards[shard_id] = UNKNOWN
        report.problems.append(Problem(shard_id, f"Expected markers of the manifest's shards only, but "
                                                 f"_done/{shard_id} names a shard {MANIFEST} does not list"))
    truth_use = TruthUse()

    def verify(shard_id: str) -> tuple[str, int, list[Problem], _Recorder]:
        recorder = _Recorder()  # replayed below in shard order, so the first scorer of an image is the same
        return (shard_id, *verify_shard(output, shard_id, entries.get(shard_id), categories, recorder), recorder)

    shard_ids = [shard_id for shard_id, state in report.shards.items() if state != PENDING]
    for shard_id, rows, problems, recorder in map_in_order(verify, shard_ids, VERIFY_WINDOW):
        for call in recorder.calls:
            truth_use.add(*call)
        report.images += rows
        report.problems += problems
        logger.info("shard %s: %d rows, %d problems", shard_id, rows, len(problems))
    for rank, samples in truth_use.duplicates():  # PQ would count these twice
        shard, key = samples[-1]
        report.problems.append(Problem(shard, "Expected each ground-truth image to be scored once, but "
                                              f"{truth_use.describe(rank, samples)}", key))
    report.problems += orphan_problems(output, committed)
    report.problems += metrics_problems(output, report)
    return report


class _Recorder:
    """Stands in for a TruthUse on a verifying thread: keeps what it is given for the main thread to add."""

    def __init__(self):
        self.calls: list[tuple[str, list]] = []

    def add(self, shard_id: str, records) -> None:
        """Raises as TruthUse.add does on records without a rank or an image id."""
        self.calls.append((shard_id, [{"rank": int(r["rank"]), "image_id": str(r["image_id"])} for r in records]))


def metrics_problems(output: Output, report: Report) -> list[Problem]:
    """``metrics.json`` must be there and count the committed shards and their images (it is written last by the
    reduce); an error when it is missing or stale, a warning while a job is running."""
    severity = WARNING if report.running else ERROR
    path = output.path("metrics.json")
    try:
        metrics = json.loads(output.fs.cat_file(path))
        counted = (int(metrics["shards"]), int(metrics["stats"]["images"]))
    except FileNotFoundError:
        return [Problem(METRICS, f"Expected {path} (the reduce's last file), but there is none: the reduce did not "
                                 "finish; rerun the job", severity=severity)]
    except (ValueError, KeyError, TypeError) as error:
        return [Problem(METRICS, f"Expected {path} to hold the reduce's shard and image counts, but: {error!r}; "
                                 "rerun the job", severity=severity)]
    committed = sum(state == COMMITTED for state in report.shards.values())
    if counted != (committed, report.images):
        return [Problem(METRICS, f"Expected {path} to count the {committed} committed shards and their "
                                 f"{report.images} images, but it counts {counted[0]} shards and {counted[1]} images: "
                                 "it is stale; rerun the job (its reduce rewrites it)", severity=severity)]
    return []


def read_manifest(output: Output) -> dict:
    """The output's manifest.

    Raises:
        NotAnOutput: it does not exist, is not JSON, or lacks the categories or the shard list.
    """
    path = output.path(MANIFEST)
    try:
        manifest = json.loads(output.fs.cat_file(path))
    except FileNotFoundError:
        raise NotAnOutput(f"Expected a jobs.label output with {MANIFEST} at {output.root}, but found none") from None
    except ValueError as error:
        raise NotAnOutput(f"Expected JSON in {path}, but it cannot be parsed: {error}") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("shards"), list) or "categories" not in manifest:
        raise NotAnOutput(f"Expected a jobs.label manifest with 'shards' and 'categories' in {path}, but got "
                          f"{sorted(manifest) if isinstance(manifest, dict) else type(manifest).__name__}")
    return manifest


def verify_shard(
    output: Output, shard_id: str, entry: Mapping | None, categories: Categories, truth_use: TruthUse | None = None
) -> tuple[int, list[Problem]]:
    """Checks one committed shard against its marker, its manifest entry (None: not listed) and the categories;
    notes in ``truth_use`` which of its samples scored which ground-truth image.

    Returns:
        ``(rows checked, problems)``.

    Raises:
        OSError: storage failed.
    """
    problems: list[Problem] = []

    def report(message: str, image_id: str | None = None, severity: str = ERROR) -> None:
        problems.append(Problem(shard_id, message, image_id, severity))

    marker = _read_marker(output, shard_id, report)
    if marker is None:
        return 0, problems
    rows = _read_rows(output, shard_id, marker, report)
    if rows is not None:
        _check_row_count(shard_id, rows, marker, entry, report)
        for row in rows:
            for message in row_problems(row, categories):
                report(message, row["image_id"])
    _check_errors_file(output, shard_id, marker, rows, report)
    _check_stats_file(output, shard_id, marker, rows, report, truth_use)
    _check_partials_file(output, shard_id, marker, rows, report)
    return len(rows or ()), problems


def _read_marker(output: Output, shard_id: str, report) -> dict | None:
    """The marker's content, or None (reported) when it is not a marker commit_shard writes."""
    try:
        marker = json.loads(output.fs.cat_file(output.marker_path(shard_id)))
    except ValueError as error:
        report(f"Expected a JSON marker in _done/{shard_id}, but it cannot be parsed: {error}")
        return None
    expected = {"shard_id", "rows", "data_bytes", "data_sha256"}
    if not isinstance(marker, dict) or not expected <= set(marker):
        report(f"Expected the keys {sorted(expected)} in _done/{shard_id}, but got "
               f"{sorted(marker) if isinstance(marker, dict) else type(marker).__name__}")
        return None
    if "stats" not in marker:  # markers before label statistics: the reduce counts no statistics for the shard
        report(f"Expected 'stats' in _done/{shard_id}, but it has none (written by an older version): the "
               f"reduce's label statistics leave this shard out; relabel it (--overwrite) to count it")
    marker = {"errors": False, "partials": False, "stats": False, **marker}
    if marker["shard_id"] != shard_id:
        report(f"Expected _done/{shard_id} to vouch for shard {shard_id}, but it names {marker['shard_id']!r}")
    return marker


def _read_rows(output: Output, shard_id: str, marker: Mapping, report) -> list[dict] | None:
    """The data file's rows, after checking its size and sha256 against the marker; None when unreadable."""
    name = f"shards/{shard_id}.parquet"
    try:
        data = output.fs.cat_file(output.data_path(shard_id))
    except FileNotFoundError:
        report(f"Expected the data file {name} the marker vouches for, but it does not exist")
        return None
    if len(data) != marker["data_bytes"]:
        report(f"Expected {marker['data_bytes']} bytes in {name} (the marker's), but got {len(data)}")
    digest = hashlib.sha256(data).hexdigest()
    if digest != marker["data_sha256"]:
        report(f"Expected sha256 {marker['data_sha256']} of {name} (the marker's), but got {digest}")
    try:
        return read_table(data, name).to_pylist()
    except TableError as error:
        report(str(error))
        return None


def _check_row_count(shard_id: str, rows: list[dict], marker: Mapping, entry: Mapping | None, report) -> None:
    """Rows: the marker's count, the manifest's image count (folder shards), unique image ids."""
    name = f"shards/{shard_id}.parquet"
    if len(rows) != marker["rows"]:
        report(f"Expected {marker['rows']} rows in {name} (the marker's), but got {len(rows)}")
    if entry is not None and entry.get("images") is not None and len(rows) != entry["images"]:
        report(f"Expected {entry['images']} rows in {name} (the manifest's images of the shard), but got {len(rows)}")
    for image_id, count in Counter(row["image_id"] for row in rows).items():
        if count > 1:
            report(f"Expected unique image ids in {name}, but this one has {count} rows", image_id)


def row_problems(row: Mapping, categories: Categories) -> list[str]:
    """What is wrong with one row: status and error, PNG, segments against the PNG, categories."""
    problems = []
    if row["status"] == STATUS_OK and row["error"] is not None:
        problems.append(f"Expected no error on a row with status 'ok', but got {row['error']!r}")
    if row["status"] != STATUS_OK and not row["error"]:
        problems.append(f"Expected a reason on a row with status {row['status']!r}, but got {row['error']!r}")
    if row["panoptic_png"] is None:
        if row["status"] == STATUS_OK or row["status"] == BAD_GROUND_TRUTH:
            problems.append(f"Expected a PNG on a row with status {row['status']!r}, but got none")
        if row["segments"]:
            problems.append(f"Expected no segments on a row without a PNG, but got {len(row['segments'])}")
        return problems
    try:
        ids = decode_ids(row["panoptic_png"])  # (H, W) uint32
    except PNGError as error:
        return problems + [f"Expected a decodable id-map PNG, but got: {error}"]
    if ids.shape != (row["height"], row["width"]):
        problems.append(f"Expected a {row['width']}x{row['height']} PNG (the row's width x height), but got "
                        f"{ids.shape[1]}x{ids.shape[0]}")
    segments = row["segments"] or []
    return problems + segment_problems(ids, segments) + category_problems(segments, categories)


def segment_problems(ids: np.ndarray, segments: list[Mapping]) -> list[str]:
    """The listed segments against the id map: same ids (VOID aside unless listed), same areas and bboxes.

    Args:
        ids: the decoded id map  # (H, W) uint32
        segments: the row's segments (id, area, bbox [x, y, w, h]).
    """
    found = segment_stats(ids)  # one pass: ascending ids, areas, bboxes with w = x_max - x_min + 1
    listed = np.array([s["id"] for s in segments], dtype=np.int64)  # (S,)
    problems = []
    ids_once, counts = np.unique(listed, return_counts=True)
    if (counts > 1).any():
        problems.append(f"Expected each segment id listed once, but ids {ids_once[counts > 1].tolist()} repeat")
    present = found["id"] if VOID in ids_once else found["id"][found["id"] != VOID]
    extra = np.setdiff1d(present, listed)
    missing = np.setdiff1d(listed, present)
    if extra.size:
        problems.append(f"Expected every id of the PNG listed in segments, but ids {_some(extra)} are not")
    if missing.size:
        problems.append(f"Expected every listed segment in the PNG, but ids {_some(missing)} have no pixel")
    index = np.minimum(np.searchsorted(found["id"], listed), found["id"].size - 1)
    in_png = found["id"][index] == listed  # (S,) bool
    areas = np.array([s["area"] if s["area"] is not None else -1 for s in segments], dtype=np.int64)
    boxes = np.array([_bbox(s["bbox"]) for s in segments], dtype=np.int64).reshape(-1, 4)
    for kind, wrong in (("area", in_png & (areas != found["area"][index])),
                        ("bbox", in_png & (boxes != found["bbox"][index]).any(axis=1))):
        for k in np.flatnonzero(wrong)[:MAX_SEGMENT_MESSAGES]:
            said = areas[k] if kind == "area" else segments[k]["bbox"]
            truth = found[kind][index[k]].tolist()
            problems.append(f"Expected segment {listed[k]}'s {kind} {said} to be the PNG's, but the PNG says {truth}")
        if wrong.sum() > MAX_SEGMENT_MESSAGES:
            problems.append(f"... and {wrong.sum() - MAX_SEGMENT_MESSAGES} more segments with a wrong {kind}")
    return problems


def category_problems(segments: Iterable[Mapping], categories: Categories) -> list[str]:
    """Segments whose category is not the manifest's, or whose isthing disagrees with their category."""
    problems = []
    for segment in segments:
        category_id = segment["category_id"]
        if category_id not in categories:
            problems.append(f"Expected segment {segment['id']}'s category to be one of the manifest's, but got "
                            f"{category_id}")
        elif bool(segment["isthing"]) != categories.by_id(category_id).isthing:
            problems.append(f"Expected segment {segment['id']}'s isthing {segment['isthing']} to be its category "
                            f"{category_id}'s ({categories.by_id(category_id).isthing})")
    return problems


def _bbox(bbox) -> list[int]:
    """A row's bbox as four integers; a missing one as -1s (never a real box)."""
    return [-1] * 4 if bbox is None or len(bbox) != 4 else [int(v) for v in bbox]


def _some(ids: np.ndarray, limit: int = 10) -> str:
    """Up to ``limit`` ids of an array, for messages."""
    return str(ids[:limit].tolist()) + (f" (and {ids.size - limit} more)" if ids.size > limit else "")


def _check_errors_file(output: Output, shard_id: str, marker: Mapping, rows: list[dict] | None, report) -> None:
    """errors/<shard>.jsonl: exists iff the marker says so; its lines are exactly the rows with status != ok."""
    name = f"errors/{shard_id}.jsonl"
    lines = _read_optional(output, output.errors_path(shard_id), name, marker["errors"], report)
    if lines is None and marker["errors"]:
        return
    entries = []
    for number, line in enumerate((lines or b"").decode(errors="replace").splitlines(), 1):
        try:
            document = json.loads(line)
            entries.append(tuple(document[k] for k in ERROR_LINE_KEYS))
        except (ValueError, KeyError, TypeError) as error:
            report(f"Expected a JSON object with {list(ERROR_LINE_KEYS)} on line {number} of {name}, but got "
                   f"{line[:80]!r} ({error})")
    if rows is None:
        return
    expected = Counter(tuple(row[k] for k in ERROR_LINE_KEYS) for row in rows if row["status"] != STATUS_OK)
    got = Counter(entries)
    for entry in sorted((expected - got).elements(), key=str):
        report(f"Expected the row with status {entry[2]!r} in {name}, but it has no line for it", entry[0])
    for entry in sorted((got - expected).elements(), key=str):
        report(f"Expected every line of {name} to be a row with status != 'ok', but this one ({entry[2]!r}) is not",
               entry[0])


def _check_stats_file(output: Output, shard_id: str, marker: Mapping, rows: list[dict] | None, report,
                      truth_use: TruthUse | None = None) -> None:
    """stats/<shard>.json: exists iff the marker says so; equals the statistics of the rows."""
    name = f"stats/{shard_id}.json"
    data = _read_optional(output, output.stats_path(shard_id), name, marker["stats"], report)
    if data is None or rows is None:
        return
    try:
        document = json.loads(data)
        stored, unevaluated = document["stats"], int(document["truth_unevaluated"])
    except (ValueError, KeyError, TypeError) as error:
        report(f"Expected a statistics document in {name}, but it cannot be read: {error!r}")
        return
    if document.get("version") != STATS_VERSION:
        report(f"Expected statistics version {STATS_VERSION} in {name}, but got {document.get('version')!r}")
    recomputed = shard_stats(rows)["stats"]
    differing = sorted(k for k in set(stored) | set(recomputed) if stored.get(k) != recomputed.get(k))
    if differing:
        report(f"Expected {name} to equal the statistics of the shard's rows, but {differing} differ")
    bad_truth = sum(row["status"] == BAD_GROUND_TRUTH for row in rows)
    unlabelled = sum(row["panoptic_png"] is None for row in rows)
    if not bad_truth <= unevaluated <= bad_truth + unlabelled:
        report(f"Expected truth_unevaluated in {name} between the {bad_truth} rows with bad ground truth and "
               f"{bad_truth + unlabelled} (those and the unlabelled rows), but got {unevaluated}")
    _check_views(document, rows, name, report)
    if truth_use is not None and isinstance(document.get("pq_extras"), dict):
        try:
            truth_use.add(shard_id, document["pq_extras"]["images"])
        except (KeyError, TypeError, ValueError):
            pass  # reported by _check_views


def _check_views(document: Mapping, rows: list[dict], name: str, report) -> None:
    """The views' partials in a statistics file: one per-image record per evaluated row (ok, with a map), and as
    many predicted instances per image as its row has thing segments (at most 100 per category)."""
    if "pq_extras" not in document:  # written before the PQ extras and instance views: nothing to check
        return
    extras, instances = document.get("pq_extras"), document.get("instances")
    if extras is None or instances is None:
        if (extras is None) != (instances is None) or (extras is None) != (document.get("semantic") is None):
            report(f"Expected the semantic, pq_extras and instances entries of {name} to be all set or all null")
        return
    by_key = {row["image_id"]: row for row in rows}
    try:
        ranks = {}
        for record in extras["images"]:
            row = by_key.get(record["image_id"])
            if row is None or row["status"] != STATUS_OK or row["panoptic_png"] is None:
                report(f"Expected every per-image record in {name} to be an evaluated row, but "
                       f"{record['image_id']!r} is not", record["image_id"])
                continue
            ranks[record["rank"]] = row
        version = instances.get("version", 1)
        image_ranks = [image["rank"] for image in instances["images"]] if version == 1 else instances["images"]
        if sorted(ranks) != sorted(image_ranks):
            report(f"Expected the instance view in {name} to hold the images of its per-image records")
            return
        detected = instances["dt"]
        predicted = Counter(segment["rank"] for segment in detected) if version == 1 else Counter(detected["rank"])
        for rank, row in ranks.items():
            per_category = Counter(segment["category_id"] for segment in row["segments"] if segment["isthing"])
            # COCOeval keeps an image's 100 best detections per category (version 1 kept every RLE)
            things = sum(per_category.values()) if version == 1 else sum(min(n, MAX_DETECTIONS)
                                                                          for n in per_category.values())
            if predicted[rank] != things:
                report(f"Expected {things} predicted instances for the row's thing segments in {name}, but got "
                       f"{predicted[rank]}", row["image_id"])
    except (KeyError, TypeError) as error:
        report(f"Expected readable pq_extras and instances entries in {name}, but got {error!r}")


def _check_partials_file(output: Output, shard_id: str, marker: Mapping, rows: list[dict] | None, report) -> None:
    """pq/<shard>.json: exists iff the marker says so; a PQ partial of at most the rows with a PNG."""
    name = f"pq/{shard_id}.json"
    data = _read_optional(output, output.partials_path(shard_id), name, marker["partials"], report)
    if data is None:
        return
    try:
        partial = PQPartial.from_json(json.loads(data))
    except (ValueError, KeyError, TypeError) as error:
        report(f"Expected a PQ partial in {name}, but it cannot be read: {error!r}")
        return
    labelled = sum(row["panoptic_png"] is not None for row in rows) if rows is not None else None
    if labelled is not None and partial.images > labelled:
        report(f"Expected at most {labelled} images (the rows with a PNG) in {name}, but got {partial.images}")


def _read_optional(output: Output, path: str, name: str, vouched: bool, report) -> bytes | None:
    """A shard file the marker may vouch for: its bytes when vouched for and present; a missing one is an error,
    one the marker does not vouch for is a warning (left by an earlier attempt; the reduce ignores it)."""
    if not vouched:
        if output.fs.exists(path):
            report(f"Expected no {name}, as the marker does not vouch for one, but it exists (left by an earlier "
                   f"attempt; ignored by the reduce)", severity=WARNING)
        return None
    try:
        return output.fs.cat_file(path)
    except FileNotFoundError:
        report(f"Expected {name}, which the marker vouches for, but it does not exist")
        return None


def orphan_problems(output: Output, committed: set[str]) -> list[Problem]:
    """Warnings for shard files without a marker: an interrupted write, which a rerun overwrites."""
    problems = []
    for folder, suffix in SHARD_FILES:
        path = output.path(folder)
        if not output.fs.exists(path):
            continue
        for name in sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in output.fs.ls(path, detail=False)):
            shard_id = name[: -len(suffix)] if name.endswith(suffix) else None
            if shard_id and shard_id not in committed:
                problems.append(Problem(shard_id, f"Expected a marker _done/{shard_id} for {folder}/{name}, but "
                                                  f"there is none: an interrupted write, which a rerun overwrites",
                                        severity=WARNING))
    return problems
