"""Ground truth in the actor: a COCO panoptic dataset's PNGs read beside the images; broken ground truth becomes
a ``bad_ground_truth`` row that keeps its prediction, and the shard is committed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from segcore.io.commit import Output, committed_shards
from segcore.io.shards import list_shards
from segcore.io.truth import load_ground_truth
from segcore.models.registry import ModelOptions
from segcore.runtime.labeling import shard_truth
from segcore.runtime.worker import BAD_GROUND_TRUTH, ShardWorker, WorkerConfig

SAMPLE = Path(__file__).parents[1] / "data" / "coco_panoptic_sample"
GOOD, OTHER = "000000142238", "000000439180"


@pytest.fixture
def dataset(tmp_path) -> tuple[Path, Path]:
    """The COCO sample with four extra copies of one image, each with one ground-truth fault."""
    images, truth = tmp_path / "images", tmp_path / "gt"
    images.mkdir()
    truth.mkdir()
    document = json.loads((SAMPLE / "panoptic_examples.json").read_text())
    base_image = next(i for i in document["images"] if i["file_name"] == f"{GOOD}.jpg")
    base = next(a for a in document["annotations"] if a["file_name"] == f"{GOOD}.png")
    for stem in (GOOD, OTHER):
        shutil.copy(SAMPLE / "input_images" / f"{stem}.jpg", images / f"{stem}.jpg")
        shutil.copy(SAMPLE / "panoptic_examples" / f"{stem}.png", truth / f"{stem}.png")
    faults = {
        "missing_png": {},
        "unknown_category": {"segments_info": [{**base["segments_info"][0], "category_id": 9999},
                                               *base["segments_info"][1:]]},
        "wrong_size": {"height": base_image["height"] + 1},
        "unlisted_id": {"segments_info": base["segments_info"][1:]},
        "png_of_other_size": {},
        "listed_absent": {"segments_info": [*base["segments_info"], *({**base["segments_info"][0], "id": 10**6 + i}
                                                                      for i in range(3))]},
        "duplicate_id": {"segments_info": [*base["segments_info"], base["segments_info"][0]]},
    }
    for offset, (name, change) in enumerate(faults.items(), start=1):
        shutil.copy(SAMPLE / "input_images" / f"{GOOD}.jpg", images / f"{name}.jpg")
        if name != "missing_png":
            source = OTHER if name == "png_of_other_size" else GOOD
            shutil.copy(SAMPLE / "panoptic_examples" / f"{source}.png", truth / f"{name}.png")
        image_id = base_image["id"] + offset
        image = {**base_image, "id": image_id, "file_name": f"{name}.jpg"}
        image.update({k: v for k, v in change.items() if k == "height"})
        if name == "png_of_other_size":
            image.pop("height")  # no size in the images list: only the PNG and the image can disagree
        annotation = {**base, "image_id": image_id, "file_name": f"{name}.png"}
        annotation.update({k: v for k, v in change.items() if k == "segments_info"})
        document["images"].append(image)
        document["annotations"].append(annotation)
    (tmp_path / "gt.json").write_text(json.dumps(document))
    return images, tmp_path / "gt.json"


def test_broken_ground_truth_becomes_rows_that_name_the_image_and_the_shard_is_committed(dataset, tmp_path):
    images, gt_json = dataset
    truth = load_ground_truth(str(gt_json), str(gt_json.parent / "gt"))
    (spec,) = list_shards(str(images), shard_size=10)
    out = tmp_path / "labels"
    worker = ShardWorker(WorkerConfig(output=str(out), model="demo", model_options=ModelOptions(device="cpu"),
                                      batch_size=4, decode_threads=2, encode_threads=2, categories=truth.categories))
    try:
        summary = worker.label_shard(spec, 0, shard_truth(truth, spec))
    finally:
        worker.close()
    output = Output.open(str(out))
    assert committed_shards(output) == {spec.shard_id}
    rows = {r["image_id"]: r for r in pq.read_table(output.data_path(spec.shard_id)).to_pylist()}
    assert len(rows) == 9 and summary["errors"] == 7
    assert rows[GOOD]["status"] == rows[OTHER]["status"] == "ok"
    reasons = {
        "missing_png": "missing_png.png of image 142239 does not exist",
        "unknown_category": "unknown category_id 9999",
        "wrong_size": "the images list says 640x428",
        "unlisted_id": "is in the gt PNG but not in its segments_info",
        "png_of_other_size": "gt map is 640x360 but the prediction is 640x427",
        "listed_absent": "3 gt segments of segments_info are not in the gt PNG (ids 1000000, 1000001, 1000002)",
        "duplicate_id": "is listed twice in segments_info",
    }
    for name, reason in reasons.items():
        row = rows[name]
        assert row["status"] == BAD_GROUND_TRUTH and reason in row["error"], (name, row["error"])
        assert row["panoptic_png"] is not None and row["width"] == 640  # the prediction is kept
    errors = [json.loads(line) for line in Path(output.errors_path(spec.shard_id)).read_text().splitlines()]
    assert sorted(e["image_id"] for e in errors) == sorted(reasons)
    assert json.loads(Path(output.partials_path(spec.shard_id)).read_text())["images"] == 2
    stats = json.loads(Path(output.stats_path(spec.shard_id)).read_text())
    assert stats["truth_unevaluated"] == 7 and stats["stats"]["statuses"] == {"ok": 2, BAD_GROUND_TRUTH: 7}


def test_ground_truth_is_found_by_file_name_and_ranked_by_json_order(dataset):
    _, gt_json = dataset
    truth = load_ground_truth(str(gt_json))
    assert truth.folder.endswith("/gt")
    assert truth.lookup(GOOD).rank == 0 and truth.lookup(OTHER).rank == 1
    assert truth.lookup(f"sub/folder/{OTHER}").image_id == 439180  # images in sub-folders match by base name
    assert truth.lookup("not-there") is None
    assert truth.lookup("wrong_size").size == (428, 640)


def test_a_ground_truth_json_that_is_not_coco_panoptic_is_refused_by_name(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="bad.json"):
        load_ground_truth(str(bad))
    with pytest.raises(FileNotFoundError, match="absent.json"):
        load_ground_truth(str(tmp_path / "absent.json"))


def test_tar_samples_find_their_ground_truth_by_key_and_rank_in_json_order(tmp_path):
    import io
    import tarfile

    from PIL import Image

    from segcore.metrics.pq import PQPartial
    from segcore.png import encode_ids
    from segcore.synthetic import demo_categories, make_demo_sample

    (tmp_path / "gt").mkdir()
    annotations, images = [], []
    with tarfile.open(tmp_path / "demo-00000.tar", "w") as archive:
        for index in range(4):
            image, id_map, segments = make_demo_sample(3, index)
            data = io.BytesIO()
            Image.fromarray(image).save(data, "PNG")
            info = tarfile.TarInfo(f"img{index}.png")
            info.size = len(data.getvalue())
            archive.addfile(info, io.BytesIO(data.getvalue()))
            (tmp_path / "gt" / f"img{index}.png").write_bytes(encode_ids(id_map))
            images.append({"id": 100 + index, "file_name": f"img{index}.png", "height": image.shape[0],
                           "width": image.shape[1]})
            annotations.append({"image_id": 100 + index, "file_name": f"img{index}.png", "segments_info": segments})
    document = {"images": images, "annotations": annotations[::-1], "categories": demo_categories().to_coco()}
    (tmp_path / "gt.json").write_text(json.dumps(document))  # JSON order: img3, img2, img1, img0
    truth = load_ground_truth(str(tmp_path / "gt.json"))
    (spec,) = list_shards(str(tmp_path / "demo-00000.tar"), shard_size=10)
    out = tmp_path / "labels"
    worker = ShardWorker(WorkerConfig(output=str(out), model="demo", model_options=ModelOptions(device="cpu"),
                                      categories=truth.categories))
    try:
        worker.label_shard(spec, 5, shard_truth(truth, spec))
    finally:
        worker.close()
    partial = PQPartial.from_json(json.loads(Path(Output.open(str(out)).partials_path(spec.shard_id)).read_text()))
    assert partial.images == 4
    ranks_by_image = {}
    for rank, gt_id, *_ in partial.matches:
        ranks_by_image.setdefault(rank, set()).add(gt_id)
    assert set(ranks_by_image) <= {0, 1, 2, 3} and len(ranks_by_image) >= 3  # the JSON's ranks, not the shard's
    for rank, gt_ids in ranks_by_image.items():  # each rank's matched gt ids belong to that JSON annotation
        assert gt_ids <= {segment["id"] for segment in document["annotations"][rank]["segments_info"]}


@pytest.mark.parametrize("section", ["images", "annotations"])
def test_one_image_id_twice_in_the_ground_truth_is_refused_at_start_naming_it(dataset, section):
    from segcore.runtime.evaluation import pair_annotations

    _, gt_json = dataset
    document = json.loads(gt_json.read_text())
    twin = dict(document[section][1])
    twin["id" if section == "images" else "image_id"] = document[section][0]["id" if section == "images"
                                                                              else "image_id"]
    document[section].append(twin)
    gt_json.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=r"image id 142238 is there twice"):
        load_ground_truth(str(gt_json))
    with pytest.raises(ValueError, match=r"image id 142238 is there twice"):
        pair_annotations(document, document)


def test_one_ground_truth_image_matched_by_several_samples_is_scored_once(tmp_path):
    import tarfile

    image = (SAMPLE / "input_images" / f"{GOOD}.jpg").read_bytes()
    with tarfile.open(tmp_path / "dups.tar", "w") as archive:
        for name in (f"x/{GOOD}.jpg", f"{GOOD}.jpg", f"y/{GOOD}.jpg"):
            info = tarfile.TarInfo(name)
            info.size = len(image)
            archive.addfile(info, __import__("io").BytesIO(image))
    truth = load_ground_truth(str(SAMPLE / "panoptic_examples.json"), str(SAMPLE / "panoptic_examples"))
    (spec,) = list_shards(str(tmp_path / "dups.tar"))
    out = tmp_path / "labels"
    worker = ShardWorker(WorkerConfig(output=str(out), model="demo", model_options=ModelOptions(device="cpu"),
                                      batch_size=4, decode_threads=3, encode_threads=1, categories=truth.categories))
    try:
        worker.label_shard(spec, 0, truth)
    finally:
        worker.close()
    rows = {r["image_id"]: r for r in pq.read_table(Output.open(str(out)).data_path(spec.shard_id)).to_pylist()}
    assert rows[f"x/{GOOD}"]["status"] == "ok"  # the first in shard order is scored
    for key in (GOOD, f"y/{GOOD}"):
        assert rows[key]["status"] == BAD_GROUND_TRUTH and f"matched by sample 'x/{GOOD}'" in rows[key]["error"]
    assert json.loads((out / "pq" / f"{spec.shard_id}.json").read_text())["images"] == 1


def test_a_folder_whose_images_match_one_ground_truth_image_several_times_is_refused_at_start(tmp_path):
    from segcore.runtime.labeling import LabelJobConfig, plan

    for folder in ("a", "b"):
        (tmp_path / "images" / folder).mkdir(parents=True)
        shutil.copy(SAMPLE / "input_images" / f"{GOOD}.jpg", tmp_path / "images" / folder / f"{GOOD}.jpg")
    config = LabelJobConfig(input=str(tmp_path / "images"), output=str(tmp_path / "labels"), model="demo",
                            gt=str(SAMPLE / "panoptic_examples.json"))
    with pytest.raises(ValueError, match=f"a/{GOOD}, b/{GOOD}"):
        plan(config)
    assert not (tmp_path / "labels").exists()  # refused before anything is written


def test_one_ground_truth_image_matched_in_two_tar_shards_is_refused_by_the_reduce_and_verify(tmp_path):
    import io
    import tarfile

    from segcore.runtime.labeling import LabelJobConfig, plan
    from segcore.runtime.reduce import reduce_output
    from segcore.runtime.truth_use import DuplicateTruth
    from segcore.runtime.verify import verify_output

    image = (SAMPLE / "input_images" / f"{GOOD}.jpg").read_bytes()
    other = (SAMPLE / "input_images" / f"{OTHER}.jpg").read_bytes()
    for shard, members in (("a", {f"a/{GOOD}.jpg": image, f"{OTHER}.jpg": other}), ("b", {f"b/{GOOD}.jpg": image})):
        with tarfile.open(tmp_path / f"{shard}.tar", "w") as archive:
            for name, content in members.items():
                info = tarfile.TarInfo(name)
                info.size = len(content)
                archive.addfile(info, io.BytesIO(content))
    config = LabelJobConfig(input=str(tmp_path / "*.tar"), output=str(tmp_path / "labels"), model="demo",
                            model_options=ModelOptions(device="cpu"), gt=str(SAMPLE / "panoptic_examples.json"),
                            batch_size=2, decode_threads=1, encode_threads=1)
    job = plan(config)
    worker = ShardWorker(config.worker_config(job.categories))
    try:
        for index, spec in enumerate(job.shards):
            worker.label_shard(spec, index, job.truth)  # each shard alone scores its sample of GOOD
    finally:
        worker.close()
        job.lock.release()
    output = Output.open(config.output)
    with pytest.raises(DuplicateTruth, match=rf"scored 2 times, by 'a/{GOOD}' \(shard a\), 'b/{GOOD}' \(shard b\)"):
        reduce_output(output)
    assert not (tmp_path / "labels" / "metrics.json").exists()  # no metrics that count one image twice
    report = verify_output(config.output)
    (problem,) = [p for p in report.errors if "scored once" in p.message]
    assert problem.shard_id == "b" and problem.image_id == f"b/{GOOD}"
