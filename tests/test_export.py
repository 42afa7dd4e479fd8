"""The exports of a jobs.label output: semantic label PNGs, COCO instance predictions, COCO panoptic, and the CLI.

Hand-built outputs (shards committed directly) give exact expected maps; a demo shard labelled by a ShardWorker
(no Ray) gives real predictions for the pycocotools checks.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image
from pycocotools import mask as mask_utils
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval

from jobs import export as export_job
from segcore.export import export_coco_panoptic, export_instances, export_semantic
from segcore.io.commit import Output, claim_output, commit_shard, committed_shards, write_whole
from segcore.io.table import error_row, image_row, rows_to_table, table_to_parquet
from segcore.png import decode_ids, encode_ids
from segcore.synthetic import demo_categories

# pycocotools' mask.decode warns under numpy 2 (its __array__ lacks the copy keyword): not this project's to fix
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation doesn't accept a copy:DeprecationWarning")

CATEGORIES = demo_categories().to_coco()  # 1 person, 3 car, 18 dog (things); 187 sky, 193 grass (stuff)
# Segment 1 is a person, 2 sky, 3 a car; 9 is in the map but in no segment (VOID, as 0 is).
ID_MAP = np.array([[1, 1, 2, 2, 2, 0],
                   [1, 1, 2, 2, 9, 0],
                   [3, 3, 3, 2, 2, 2],
                   [3, 3, 0, 2, 2, 2]], np.uint32)
SEGMENTS = [
    {"id": 1, "category_id": 1, "isthing": True, "area": 4, "bbox": [0, 0, 2, 2], "score": 0.875},
    {"id": 2, "category_id": 187, "isthing": False, "area": 11, "bbox": [2, 0, 4, 4], "score": 0.75},
    {"id": 3, "category_id": 3, "isthing": True, "area": 5, "bbox": [0, 2, 3, 2], "score": 0.5},
]
SEMANTIC = np.array([[1, 1, 187, 187, 187, 0],
                     [1, 1, 187, 187, 0, 0],
                     [3, 3, 3, 187, 187, 187],
                     [3, 3, 0, 187, 187, 187]])


def labelled_row(key: str, id_map: np.ndarray, segments: list[dict]) -> dict:
    height, width = id_map.shape
    return image_row(key, f"images/{key}.jpg", width, height, encode_ids(id_map), segments, model="hand")


def write_output(root: Path, shards: dict[str, list[dict]], categories: list[dict]) -> str:
    """A jobs.label output with these committed shards, and one data file without a marker (not committed)."""
    output = Output.open(str(root))
    claim_output(output, {"categories": categories, "ground_truth": None})
    for shard_id, rows in shards.items():
        commit_shard(output, shard_id, table_to_parquet(rows_to_table(rows)), len(rows))
    stray = [labelled_row("uncommitted", ID_MAP, SEGMENTS)]
    write_whole(output, output.data_path("zz-uncommitted"), table_to_parquet(rows_to_table(stray)))
    return str(root)


@pytest.fixture
def hand_output(tmp_path) -> str:
    """Two committed shards: "a" (the map transposed, and an image that could not be labelled), "b" (the map)."""
    transposed = [{**s, "bbox": [s["bbox"][1], s["bbox"][0], s["bbox"][3], s["bbox"][2]]} for s in SEGMENTS]
    shards = {"a": [labelled_row("img-t", np.ascontiguousarray(ID_MAP.T), transposed),
                    error_row("broken", "images/broken.jpg", "decode_error", "not a JPEG", "hand")],
              "b": [labelled_row("img", ID_MAP, SEGMENTS)]}
    return write_output(tmp_path / "labels", shards, CATEGORIES)


@pytest.fixture(scope="module")
def demo_output(tmp_path_factory) -> str:
    """A demo shard of 8 images labelled by the demo model in a ShardWorker, with the job's manifest."""
    from segcore.io.shards import list_shards
    from segcore.models.registry import ModelOptions
    from segcore.runtime.worker import ShardWorker, WorkerConfig
    from segcore.synthetic import write_demo_shards

    root = tmp_path_factory.mktemp("demo")
    (spec,) = list_shards(write_demo_shards(root / "corpus", 1, images_per_shard=8))
    out = str(root / "labels")
    worker = ShardWorker(WorkerConfig(output=out, model="demo", batch_size=4, decode_threads=1, encode_threads=1,
                                      model_options=ModelOptions(device="cpu")))
    try:
        worker.label_shard(spec)
    finally:
        worker.close()
    claim_output(Output.open(out), {"categories": CATEGORIES, "ground_truth": None})
    return out


def read_png(path: Path) -> tuple[str, np.ndarray]:
    with Image.open(path) as image:
        return image.mode, np.array(image)


def output_rows(output_uri: str) -> list[dict]:
    output = Output.open(output_uri)
    return [row for shard_id in sorted(committed_shards(output))
            for row in pq.read_table(output.data_path(shard_id)).to_pylist() if row["panoptic_png"] is not None]


def test_semantic_pngs_hold_each_pixels_category_id_and_void_as_0(hand_output, tmp_path):
    summary = export_semantic(hand_output, str(tmp_path / "semantic"))
    assert (summary.images, summary.skipped, summary.json_uri) == (2, 1, None)
    assert sorted(p.name for p in (tmp_path / "semantic").iterdir()) == ["img-t.png", "img.png"]  # committed only
    mode, semantic = read_png(tmp_path / "semantic" / "img.png")
    assert mode == "L" and semantic.dtype == np.uint8
    np.testing.assert_array_equal(semantic, SEMANTIC)
    np.testing.assert_array_equal(read_png(tmp_path / "semantic" / "img-t.png")[1], SEMANTIC.T)


def test_semantic_pngs_are_16_bit_when_a_category_id_exceeds_255(tmp_path):
    categories = [*CATEGORIES, {"id": 300, "name": "kite", "isthing": 1, "supercategory": "sky", "color": [1, 2, 3]}]
    segments = [{**s, "category_id": 300} if s["id"] == 3 else s for s in SEGMENTS]
    output = write_output(tmp_path / "labels", {"a": [labelled_row("img", ID_MAP, segments)]}, categories)
    assert export_semantic(output, str(tmp_path / "semantic")).images == 1
    mode, semantic = read_png(tmp_path / "semantic" / "img.png")
    assert mode == "I;16" and semantic.dtype == np.uint16
    np.testing.assert_array_equal(semantic, np.where(SEMANTIC == 3, 300, SEMANTIC))


def test_semantic_pngs_of_real_predictions_match_a_per_segment_painting(demo_output, tmp_path):
    export_semantic(demo_output, str(tmp_path / "semantic"))
    rows = output_rows(demo_output)
    assert len(rows) == 8
    for row in rows:
        id_map = decode_ids(row["panoptic_png"])
        expected = np.zeros(id_map.shape, np.uint8)
        for segment in row["segments"]:
            expected[id_map == segment["id"]] = segment["category_id"]
        np.testing.assert_array_equal(read_png(tmp_path / "semantic" / f"{row['image_id']}.png")[1], expected)


def test_instance_rles_are_the_thing_masks_with_their_scores_and_stuff_is_left_out(demo_output, tmp_path):
    dest = tmp_path / "instances.json"
    summary = export_instances(demo_output, str(dest))
    document = json.loads(dest.read_text())
    rows = output_rows(demo_output)
    assert summary.images == len(document["images"]) == len(rows)
    assert {c["id"] for c in document["categories"]} == {1, 3, 18}
    by_image = {}
    for annotation in document["annotations"]:
        by_image.setdefault(annotation["image_id"], []).append(annotation)
    for row in rows:
        id_map = decode_ids(row["panoptic_png"])
        things = [s for s in row["segments"] if s["isthing"]]
        annotations = by_image.get(int(row["image_id"]), [])
        assert [(a["category_id"], a["score"], a["area"], a["bbox"]) for a in annotations] == [
            (s["category_id"], s["score"], s["area"], s["bbox"]) for s in things]
        for annotation, segment in zip(annotations, things):
            assert isinstance(annotation["segmentation"]["counts"], str) and annotation["iscrowd"] == 0
            np.testing.assert_array_equal(mask_utils.decode(annotation["segmentation"]), id_map == segment["id"])
    assert summary.annotations == len(document["annotations"]) == sum(len(a) for a in by_image.values()) > 0
    assert len({a["id"] for a in document["annotations"]}) == summary.annotations
    assert len(COCO(str(dest)).getAnnIds()) == summary.annotations


def test_cocoeval_of_the_instance_predictions_against_themselves_gives_ap_1(demo_output, tmp_path):
    dest = tmp_path / "instances.json"
    export_instances(demo_output, str(dest))
    document = json.loads(dest.read_text())
    gt = COCO()
    gt.dataset = {**document, "annotations": [{k: v for k, v in a.items() if k != "score"}
                                              for a in document["annotations"]]}
    gt.createIndex()
    evaluation = COCOeval(gt, gt.loadRes(document["annotations"]), iouType="segm")
    evaluation.evaluate()
    evaluation.accumulate()
    evaluation.summarize()
    assert evaluation.stats[0] == pytest.approx(1.0)


def test_instances_of_a_hand_built_output_use_the_keys_as_image_ids(hand_output, tmp_path):
    summary = export_instances(hand_output, str(tmp_path / "instances.json"))
    document = json.loads((tmp_path / "instances.json").read_text())
    assert (summary.images, summary.skipped, summary.annotations) == (2, 1, 4)
    assert [(a["id"], a["image_id"], a["category_id"]) for a in document["annotations"]] == [
        (1, "img-t", 1), (2, "img-t", 3), (3, "img", 1), (4, "img", 3)]  # shard order, things only
    assert document["annotations"][3]["segmentation"]["size"] == [4, 6]


def test_coco_panoptic_export_keeps_the_maps_and_segments_of_committed_rows(hand_output, tmp_path):
    summary = export_coco_panoptic(hand_output, str(tmp_path / "pred.json"))
    document = json.loads((tmp_path / "pred.json").read_text())
    assert (summary.images, summary.skipped, summary.annotations) == (2, 1, 6)
    assert [a["file_name"] for a in document["annotations"]] == ["img-t.png", "img.png"]
    assert [i["file_name"] for i in document["images"]] == ["img-t.jpg", "img.jpg"]
    sky = {k: v for k, v in SEGMENTS[1].items() if k != "isthing"}
    assert document["annotations"][1]["segments_info"][1] == {**sky, "iscrowd": 0}
    np.testing.assert_array_equal(decode_ids((tmp_path / "pred" / "img.png").read_bytes()), ID_MAP)


def test_the_cli_requires_one_of_the_three_exports(hand_output, capsys):
    with pytest.raises(SystemExit) as exited:
        export_job.main(["--output", hand_output])
    assert exited.value.code == 2
    error = capsys.readouterr().err
    assert all(flag in error for flag in ("--coco-json", "--semantic-dir", "--instances-json"))


def test_the_cli_writes_several_exports_in_one_call(hand_output, tmp_path, capsys):
    code = export_job.main(["--output", hand_output, "--coco-json", str(tmp_path / "pred.json"),
                            "--semantic-dir", str(tmp_path / "semantic"),
                            "--instances-json", str(tmp_path / "instances.json")])
    assert code == 0
    lines = capsys.readouterr().out.splitlines()
    suffix = " (1 rows without a map left out)"
    assert lines == [f"exported 2 images to {tmp_path / 'pred.json'} and {tmp_path / 'pred'}/{suffix}",
                     f"exported 2 images to {tmp_path / 'semantic'}/{suffix}",
                     f"exported 2 images to {tmp_path / 'instances.json'} (4 instance annotations){suffix}"]
    assert (tmp_path / "pred" / "img.png").exists() and (tmp_path / "semantic" / "img.png").exists()
    assert len(json.loads((tmp_path / "instances.json").read_text())["annotations"]) == 4


def test_the_cli_exits_2_on_a_folder_without_a_manifest(tmp_path, capsys):
    (tmp_path / "not-an-output").mkdir()
    code = export_job.main(["--output", str(tmp_path / "not-an-output"), "--semantic-dir", str(tmp_path / "s")])
    assert code == 2 and "manifest.json" in capsys.readouterr().err
    assert not (tmp_path / "s").exists()



def test_every_export_takes_image_ids_from_the_jobs_ground_truth(coco_copy, tmp_path):
    document = json.loads((coco_copy / "gt.json").read_text())
    new_ids = {image["id"]: index for index, image in enumerate(document["images"], start=7)}
    for annotation in document["annotations"]:
        annotation["image_id"] = new_ids[annotation["image_id"]]
    for image in document["images"]:
        image["id"] = new_ids[image["id"]]
    (coco_copy / "gt.json").write_text(json.dumps(document))
    output = Output.open(str(tmp_path / "labels"))
    claim_output(output, {"categories": CATEGORIES, "ground_truth": {"json": str(coco_copy / "gt.json"), "dir": None}})
    keys = [image["file_name"].rsplit(".", 1)[0] for image in document["images"]]
    rows = [labelled_row(key, ID_MAP, SEGMENTS) for key in keys]
    commit_shard(output, "a", table_to_parquet(rows_to_table(rows)), len(rows))
    export_coco_panoptic(output.root, str(tmp_path / "pred.json"))
    export_instances(output.root, str(tmp_path / "instances.json"))
    expected = [image["id"] for image in document["images"]]
    assert expected != [int(key) for key in keys]
    for name in ("pred.json", "instances.json"):
        assert [image["id"] for image in json.loads((tmp_path / name).read_text())["images"]] == expected, name
