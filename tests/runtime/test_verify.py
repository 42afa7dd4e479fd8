"""jobs.verify: a real output (the worker without Ray) passes; each kind of damage to a copy is caught and named."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import tarfile
from pathlib import Path

import numpy as np
import pytest

from jobs import verify as verify_job
from segcore.io.commit import Output
from segcore.io.table import read_table, rows_to_table, table_to_parquet
from segcore.models.registry import ModelOptions
from segcore.png import decode_ids, encode_ids
from segcore.runtime.labeling import LabelJobConfig, plan, shard_truth
from segcore.runtime.reduce import reduce_output
from segcore.runtime.verify import METRICS, NotAnOutput, verify_output
from segcore.runtime.worker import BAD_GROUND_TRUTH, ShardWorker, shard_stats
from segcore.synthetic import make_demo_sample, write_demo_shards

SHARDS = ["corpus-00000", "corpus-00001", "corpus-00002"]
DAMAGED = "corpus-00001"  # the shard with error rows: a member that is no image, and a sample with bad ground truth


def add_member(archive: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    archive.addfile(info, io.BytesIO(data))


def add_bad_samples(path: Path) -> None:
    """Appends an undecodable image and an image whose ground-truth map comes without segments_info."""
    from PIL import Image

    image, id_map, _ = make_demo_sample(7, 999)
    jpeg, png = io.BytesIO(), io.BytesIO()
    Image.fromarray(image).save(jpeg, "JPEG")
    Image.fromarray(np.stack([id_map.astype(np.uint8)] * 3, axis=-1)).save(png, "PNG")
    with tarfile.open(path, "a", format=tarfile.USTAR_FORMAT) as archive:
        add_member(archive, "zz-broken.jpg", b"not an image at all")
        add_member(archive, "zz-truthless.jpg", jpeg.getvalue())
        add_member(archive, "zz-truthless.panoptic.png", png.getvalue())


@pytest.fixture(scope="module")
def good_output(tmp_path_factory) -> Path:
    """A committed 3-shard output of the demo model, labelled by the worker without Ray, as the driver does."""
    root = tmp_path_factory.mktemp("verify")
    pattern = write_demo_shards(root / "corpus", n_shards=3, images_per_shard=4)
    add_bad_samples(root / "corpus" / f"{DAMAGED}.tar")
    config = LabelJobConfig(input=pattern, output=str(root / "labels"), model="demo",
                            model_options=ModelOptions(device="cpu"), batch_size=4, decode_threads=2, encode_threads=1)
    job = plan(config)
    worker = ShardWorker(config.worker_config(job.categories))
    try:
        for index, spec in enumerate(job.shards):
            worker.label_shard(spec, index, shard_truth(job.truth, spec))
    finally:
        worker.close()
        job.lock.release()
    reduce_output(Output.open(str(root / "labels")))
    return root / "labels"


@pytest.fixture()
def copy(good_output, tmp_path) -> Path:
    """A writable copy of the good output, to damage."""
    return Path(shutil.copytree(good_output, tmp_path / "labels"))


def rewrite_rows(labels: Path, shard_id: str, change, fix_stats: bool = False) -> list[dict]:
    """Changes a shard's rows and rewrites its Parquet, fixing the marker's size and sha256 (and, with
    ``fix_stats``, the statistics) so that only the content checks can notice."""
    data_path = labels / "shards" / f"{shard_id}.parquet"
    rows = read_table(data_path.read_bytes(), str(data_path)).to_pylist()
    change(rows)
    data = table_to_parquet(rows_to_table(rows))
    data_path.write_bytes(data)
    marker_path = labels / "_done" / shard_id
    marker = json.loads(marker_path.read_text())
    marker.update(data_bytes=len(data), data_sha256=hashlib.sha256(data).hexdigest())
    marker_path.write_text(json.dumps(marker))
    if fix_stats:
        stats_path = labels / "stats" / f"{shard_id}.json"
        document = json.loads(stats_path.read_text())
        document["stats"] = shard_stats(rows)["stats"]
        stats_path.write_text(json.dumps(document))
    return rows


def messages(report, severity: str = "error") -> list[str]:
    return [str(p) for p in report.problems if p.severity == severity]


def test_a_good_output_has_no_problems(good_output):
    report = verify_output(str(good_output))
    assert report.problems == [] and report.ok
    assert report.shards == {shard_id: "committed" for shard_id in SHARDS}
    assert report.images == 3 * 4 + 2
    statuses = {r["status"] for r in read_table((good_output / "shards" / f"{DAMAGED}.parquet").read_bytes(),
                                                    DAMAGED).to_pylist()}
    assert statuses == {"ok", "not_an_image", BAD_GROUND_TRUTH}  # the error paths are really exercised
    assert (good_output / "errors" / f"{DAMAGED}.jsonl").exists() and (good_output / "pq" / f"{DAMAGED}.json").exists()


def test_a_flipped_byte_in_a_data_file_is_a_sha_mismatch(copy):
    path = copy / "shards" / f"{DAMAGED}.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))
    report = verify_output(str(copy))
    assert not report.ok
    assert any(f"{DAMAGED}: Expected sha256" in m and f"shards/{DAMAGED}.parquet" in m for m in messages(report))
    assert {p.shard_id for p in report.errors} == {DAMAGED}


def test_a_changed_segment_area_is_caught_by_the_png_check_alone(copy):
    def grow_first_segment(rows):
        rows[0]["segments"][0]["area"] += 1

    rows = rewrite_rows(copy, "corpus-00002", grow_first_segment, fix_stats=True)
    report = verify_output(str(copy))
    (problem,) = report.errors
    segment = rows[0]["segments"][0]
    assert problem.shard_id == "corpus-00002" and problem.image_id == rows[0]["image_id"]
    assert f"segment {segment['id']}'s area {segment['area']}" in problem.message
    assert f"the PNG says {segment['area'] - 1}" in problem.message


def test_a_png_with_an_unlisted_id_is_caught(copy):
    new_id = 4321

    def paint_a_pixel(rows):
        ids = decode_ids(rows[1]["panoptic_png"])
        ids[0, 0] = new_id
        rows[1]["panoptic_png"] = encode_ids(ids)

    rows = rewrite_rows(copy, "corpus-00000", paint_a_pixel)
    report = verify_output(str(copy))
    assert {(p.shard_id, p.image_id) for p in report.errors} == {("corpus-00000", rows[1]["image_id"])}
    assert any(f"ids [{new_id}] are not" in m for m in messages(report))


def test_a_missing_data_file_is_caught(copy):
    (copy / "shards" / "corpus-00000.parquet").unlink()
    report = verify_output(str(copy))
    assert [str(p) for p in report.errors if p.shard_id != METRICS] == [
        ("error: corpus-00000: Expected the data file shards/corpus-00000.parquet the marker vouches for, "
         "but it does not exist")]
    assert any("it is stale" in p.message for p in report.errors if p.shard_id == METRICS)


def test_statistics_that_disagree_with_the_rows_are_caught(copy):
    path = copy / "stats" / "corpus-00002.json"
    document = json.loads(path.read_text())
    document["stats"]["pixels"] += 1
    path.write_text(json.dumps(document))
    report = verify_output(str(copy))
    assert messages(report) == [("error: corpus-00002: Expected stats/corpus-00002.json to equal the statistics "
                                 "of the shard's rows, but ['pixels'] differ")]


def test_an_errors_file_missing_a_line_is_caught(copy):
    path = copy / "errors" / f"{DAMAGED}.jsonl"
    first, *rest = path.read_text().splitlines(keepends=True)
    path.write_text("".join(rest))
    report = verify_output(str(copy))
    (problem,) = report.errors
    assert problem.shard_id == DAMAGED and problem.image_id == json.loads(first)["image_id"]
    assert "no line for it" in problem.message and f"errors/{DAMAGED}.jsonl" in problem.message


def test_a_marker_of_a_shard_not_in_the_manifest_is_an_error(copy):
    shutil.copy(copy / "_done" / "corpus-00000", copy / "_done" / "corpus-09999")
    shutil.copy(copy / "shards" / "corpus-00000.parquet", copy / "shards" / "corpus-09999.parquet")
    report = verify_output(str(copy))
    assert report.shards["corpus-09999"] == "unknown"
    assert {p.shard_id for p in report.errors} == {"corpus-09999", METRICS}  # metrics.json counts one shard less
    assert any("manifest.json does not list" in m for m in messages(report))
    assert any("it names 'corpus-00000'" in m for m in messages(report))  # the copied marker vouches for another


def test_a_data_file_without_a_marker_is_a_warning_only(copy):
    (copy / "_done" / "corpus-00002").unlink()
    (copy / "_lock.json").write_text("{}")  # as a job running there leaves it: its shards in flight look the same
    report = verify_output(str(copy))
    assert report.ok and report.errors == [] and report.running and "a job is running there" in report.summary_line()
    assert report.shards["corpus-00002"] == "pending"
    warned = {(p.shard_id, p.message.split(" for ")[1].split(",")[0]) for p in report.warnings if p.shard_id != METRICS}
    assert warned == {("corpus-00002", f"{folder}/corpus-00002.{suffix}")
                      for folder, suffix in (("shards", "parquet"), ("pq", "json"), ("stats", "json"))}


def test_metrics_missing_or_stale_after_the_reduce_is_an_error(copy):
    (copy / "_done" / "corpus-00002").unlink()  # as if the shard were redone by a job killed before its reduce
    report = verify_output(str(copy))
    (stale,) = [p for p in report.errors if p.shard_id == METRICS]
    assert "counts 3 shards and 14 images" in stale.message and "2 committed shards" in stale.message
    (copy / "metrics.json").unlink()  # a driver killed during the reduce: metrics.json, written last, is missing
    (missing,) = [p for p in verify_output(str(copy)).errors if p.shard_id == METRICS]
    assert "metrics.json" in missing.message and "did not finish" in missing.message


def test_the_cli_exits_0_when_all_is_well_1_with_problems_and_2_on_bad_input(good_output, copy, tmp_path, capsys):
    assert verify_job.main(["--output", str(good_output), "--json", str(tmp_path / "good.json")]) == 0
    assert "3 committed shards (14 images) checked" in capsys.readouterr().out
    assert json.loads((tmp_path / "good.json").read_text())["ok"] is True
    (copy / "stats" / "corpus-00000.json").unlink()
    assert verify_job.main(["--output", str(copy), "--json", str(tmp_path / "bad.json")]) == 1
    assert "error: corpus-00000: Expected stats/corpus-00000.json" in capsys.readouterr().out
    document = json.loads((tmp_path / "bad.json").read_text())
    assert document["errors"] == 1 and len(document["shards"]["corpus-00000"]["problems"]) == 1
    assert verify_job.main(["--output", str(tmp_path / "nothing")]) == 2
    assert "manifest.json" in capsys.readouterr().err
    with pytest.raises(NotAnOutput):
        verify_output(str(tmp_path / "nothing"))
    for flags in (["--output", str(good_output), "--storage-options", "{not json"], []):
        with pytest.raises(SystemExit) as exit_:
            verify_job.main(flags)
        assert exit_.value.code == 2


def test_a_file_the_marker_does_not_vouch_for_is_a_warning(copy):
    assert not (copy / "errors" / "corpus-00000.jsonl").exists()  # left by an earlier attempt, e.g. before --overwrite
    (copy / "errors" / "corpus-00000.jsonl").write_text(json.dumps({"image_id": "x", "source": "y",
                                                                    "status": "not_an_image", "error": "z"}) + "\n")
    report = verify_output(str(copy))
    assert report.ok and [str(p) for p in report.warnings] == [
        ("warning: corpus-00000: Expected no errors/corpus-00000.jsonl, as the marker does not vouch for one, but "
         "it exists (left by an earlier attempt; ignored by the reduce)")]


def test_instance_records_that_disagree_with_the_rows_are_caught(copy):
    stats_path = copy / "stats" / "corpus-00000.json"
    document = json.loads(stats_path.read_text())
    columns = document["instances"]["dt"]
    assert columns["rank"], "the corpus has predicted things"
    dropped = {name: column.pop() for name, column in columns.items()}
    stats_path.write_text(json.dumps(document))
    found = messages(verify_output(str(copy)))
    assert any("predicted instances" in m and "corpus-00000" in m for m in found), found
    for name, value in dropped.items():
        columns[name].append(value)
    stats_path.write_text(json.dumps(document))
    assert not messages(verify_output(str(copy)))
    document["pq_extras"]["images"][0]["image_id"] = "no-such-image"
    stats_path.write_text(json.dumps(document))
    found = messages(verify_output(str(copy)))
    assert any("'no-such-image' is not" in m for m in found), found


def test_statistics_from_before_the_views_pass_verify_and_the_reduce_says_what_they_lack(copy):
    from segcore.io.commit import Output
    from segcore.runtime.reduce import reduce_output

    stats_path = copy / "stats" / "corpus-00000.json"
    document = json.loads(stats_path.read_text())
    for key in ("pq_extras", "instances"):
        del document[key]  # as the version before the PQ extras and instance views wrote it
    stats_path.write_text(json.dumps(document))
    assert not messages(verify_output(str(copy)))
    metrics = reduce_output(Output.open(str(copy)))
    assert metrics["shards_without_views"] == 1
    assert metrics["instances"]["images"] < metrics["images"]  # the old shard's images are not in the AP
    assert "labelled by an older version" in (copy / "report.md").read_text()


def test_a_reduce_cut_short_leaves_no_metrics_and_verify_says_so(copy, monkeypatch):
    import segcore.runtime.reduce as reduce_module

    (copy / "metrics.json").unlink()

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # the driver dies while the HTML report is written

    monkeypatch.setattr(reduce_module, "write_html_report", killed)
    with pytest.raises(KeyboardInterrupt):
        reduce_output(Output.open(str(copy)))
    assert (copy / "report.md").exists() and not (copy / "metrics.json").exists()  # metrics.json comes last
    assert any("did not finish" in p.message for p in verify_output(str(copy)).errors)


def test_a_shard_whose_partials_do_not_parse_is_left_out_by_name_and_the_rest_is_summed(copy):
    from segcore.io.commit import Output
    from segcore.runtime.reduce import reduce_output

    whole = reduce_output(Output.open(str(copy)))
    (copy / "pq" / "corpus-00001.json").write_text("{not json")
    stats_path = copy / "stats" / "corpus-00002.json"
    document = json.loads(stats_path.read_text())
    document["instances"]["version"] = 99  # written by a version this code does not know
    stats_path.write_text(json.dumps(document))
    metrics = reduce_output(Output.open(str(copy)))
    left_out = {entry["shard"]: entry["error"] for entry in metrics["shards_left_out"]}
    assert set(left_out) == {"corpus-00001", "corpus-00002"}
    assert "pq/corpus-00001.json" in left_out["corpus-00001"]
    assert "stats/corpus-00002.json" in left_out["corpus-00002"] and "99" in left_out["corpus-00002"]
    assert metrics["shards"] == 1 and metrics["stats"]["images"] < whole["stats"]["images"]
    assert "2 committed shards are left out" in (copy / "report.md").read_text()


def test_ranks_interleaved_across_shards_give_the_sum_of_the_partials_bit_for_bit(copy):
    """As with --gt whose JSON order interleaves the shards: the reduce folds the matches again in rank order."""
    from segcore.io.commit import Output
    from segcore.metrics.pq import PQPartial, summarize
    from segcore.runtime.reduce import job_categories_of, reduce_output

    whole = PQPartial()
    for index, shard_id in enumerate(SHARDS):
        path = copy / "pq" / f"{shard_id}.json"
        document = json.loads(path.read_text())
        ranks = document["matches"]["image_rank"]
        document["matches"]["image_rank"] = [(rank % 1_000_000_000) * 3 + (2 - index) for rank in ranks]
        path.write_text(json.dumps(document))
        whole += PQPartial.from_json(document)
    assert len(whole.matches) > 10
    output = Output.open(str(copy))
    metrics = json.loads(json.dumps(reduce_output(output)))
    expected = json.loads(json.dumps(summarize(whole, job_categories_of(output))))
    assert metrics["pq"] == expected


def test_the_worst_and_best_images_name_their_shard(good_output):
    metrics = json.loads((good_output / "metrics.json").read_text())
    for entry in metrics["per_image"]["worst"] + metrics["per_image"]["best"]:
        rows = read_table((good_output / "shards" / f"{entry['shard']}.parquet").read_bytes(), "shard").to_pylist()
        assert entry["image_id"] in {row["image_id"] for row in rows}
