"""The torchvision backend: real Mask R-CNN and LR-ASPP architectures with random weights, on the CPU."""

from __future__ import annotations

import dataclasses
import functools
import json
import uuid

import fsspec
import numpy as np
import pytest
import torch

from segcore.categories import LabelMap, coco_panoptic_categories
from segcore.models import torchvision_backend as tvb
from segcore.models.base import Segmenter
from segcore.models.registry import ModelOptions, check_spec, load_segmenter

torch.set_num_threads(1)

CATEGORIES = coco_panoptic_categories()
LABELS = {"instance": [None, 1, 3, 18], "semantic": [None, 184, 187]}  # person, car, dog; tree, sky
# Small inputs and few detections keep Mask R-CNN near a second per batch on one core.
SMALL_MASK_RCNN = {"min_size": 128, "max_size": 160, "box_detections_per_img": 5}
INSTANCE, SEMANTIC = "maskrcnn_resnet50_fpn", "lraspp_mobilenet_v3_large"


def random_images(seed: int = 0) -> list[np.ndarray]:
    """A mixed-size batch of random RGB uint8 images."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (96, 128, 3), dtype=np.uint8), rng.integers(0, 256, (120, 80, 3), dtype=np.uint8)]


def write_label_map(folder, document: dict) -> str:
    path = folder / f"labels-{uuid.uuid4().hex[:8]}.json"
    path.write_text(json.dumps(document))
    return str(path)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Random-weight state dicts: Mask R-CNN on disk, LR-ASPP in fsspec's memory filesystem, plus a label map."""
    from torchvision.models.detection import maskrcnn_resnet50_fpn
    from torchvision.models.segmentation import lraspp_mobilenet_v3_large

    folder = tmp_path_factory.mktemp("torchvision")
    torch.manual_seed(0)
    instance = maskrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=len(LABELS["instance"]))
    semantic = lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=len(LABELS["semantic"]))
    semantic_state = semantic.state_dict()
    semantic_state["classifier.high_classifier.bias"] = torch.tensor([0.0, 6.0, 0.0])  # tree wins most pixels
    torch.save(instance.state_dict(), folder / "instance.pth")
    memory_path = f"/tvb-{uuid.uuid4().hex[:8]}/semantic.pth"
    with fsspec.open(f"memory://{memory_path}", "wb") as handle:
        torch.save(semantic_state, handle)
    yield {
        "instance": str(folder / "instance.pth"),
        "semantic": f"memory://{memory_path}",
        "semantic_state": semantic_state,
        "label_map": write_label_map(folder, LABELS),
        "folder": folder,
    }
    fsspec.filesystem("memory").rm(memory_path.rsplit("/", 1)[0], recursive=True)


@pytest.fixture(scope="module")
def options(checkpoints) -> ModelOptions:
    return ModelOptions(
        device="cpu", label_map=checkpoints["label_map"], score_threshold=0.0, cache_dir=str(checkpoints["folder"])
    )


@pytest.fixture(scope="module")
def segmenter(checkpoints, options):
    """Loaded through the registry; only the Mask R-CNN input size and detection count are made small."""
    spec = f"torchvision:{INSTANCE}@{checkpoints['instance']}+{SEMANTIC}@{checkpoints['semantic']}"
    small = functools.partial(tvb.load_torchvision, instance_kwargs=SMALL_MASK_RCNN)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(tvb, "load_torchvision", small)
        return load_segmenter(spec, options)


@pytest.fixture(scope="module")
def results(segmenter):
    return segmenter.segment(random_images())


def with_changes(segmenter, **changes) -> tvb.TorchvisionSegmenter:
    """The same loaded models under other settings, dtype or semantic label map."""
    semantic = changes.pop("semantic", segmenter.semantic)
    arguments = {"spec": segmenter.spec, "categories": segmenter.categories, "device": segmenter.device}
    arguments |= {"dtype": segmenter.dtype, "settings": segmenter.settings} | changes
    return tvb.TorchvisionSegmenter(segmenter.instance, semantic, **arguments)


def check_result(result, image: np.ndarray) -> None:
    """Id map and segments agree with each other, with numpy recomputation, and with the categories."""
    id_map = result.id_map_numpy()
    assert result.id_map.dtype == torch.int32 and id_map.shape == image.shape[:2]
    listed = [s["id"] for s in result.segments]
    assert sorted(set(np.unique(id_map)) - {0}) == listed
    for segment in result.segments:
        ys, xs = np.nonzero(id_map == segment["id"])
        assert segment["area"] == len(xs)
        assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert segment["isthing"] == CATEGORIES.by_id(segment["category_id"]).isthing
        assert 0.0 <= segment["score"] <= 1.0
        mapped = LABELS["instance"] if segment["isthing"] else LABELS["semantic"]
        assert segment["category_id"] in mapped


# ------------------------------------------------------------------------------------------------ segmenting


def test_segments_a_mixed_size_batch_into_things_and_stuff(results):
    for result, image in zip(results, random_images()):
        check_result(result, image)
    segments = [s for r in results for s in r.segments]
    assert any(s["isthing"] for s in segments) and any(not s["isthing"] for s in segments)
    for result in results:  # fusion numbers things first, then stuff
        kinds = [s["isthing"] for s in result.segments]
        assert kinds == sorted(kinds, reverse=True)
    stuff = [s for s in segments if not s["isthing"]]
    assert all(s["area"] >= tvb.STUFF_AREA_THRESHOLD for s in stuff)


def test_tensor_and_numpy_images_give_the_same_result(segmenter, results):
    again = segmenter.segment([torch.from_numpy(image) for image in random_images()])
    for first, second in zip(results, again):
        assert torch.equal(first.id_map, second.id_map) and first.segments == second.segments


def test_an_image_gets_the_same_labels_alone_and_in_a_mixed_batch(segmenter, results):
    for image, together in zip(random_images(), results):
        alone = segmenter.segment([image])[0]
        assert torch.equal(alone.id_map, together.id_map) and alone.segments == together.segments
    keys = {segmenter.batch_key(*image.shape[:2]) for image in random_images()}
    assert len(keys) > 1  # the batch really mixes Mask R-CNN input sizes


def test_a_score_threshold_of_one_leaves_only_stuff(segmenter):
    settings = dataclasses.replace(segmenter.settings, score_threshold=1.0)
    results = with_changes(segmenter, settings=settings).segment(random_images())
    for result, image in zip(results, random_images()):
        check_result(result, image)
        assert result.segments and not any(s["isthing"] for s in result.segments)


def test_no_instances_and_a_void_semantic_map_give_an_empty_result(segmenter):
    void = dataclasses.replace(segmenter.semantic, label_map=LabelMap((None, None, None)))
    settings = dataclasses.replace(segmenter.settings, score_threshold=1.0)
    results = with_changes(segmenter, semantic=void, settings=settings).segment(random_images())
    for result, image in zip(results, random_images()):
        assert result.segments == [] and result.id_map.dtype == torch.int32
        assert result.id_map.shape == image.shape[:2] and not result.id_map.any()


def test_bfloat16_autocast_keeps_the_contract(segmenter):
    results = with_changes(segmenter, dtype=torch.bfloat16).segment(random_images())
    for result, image in zip(results, random_images()):
        check_result(result, image)


def test_timings_cover_the_stages_and_an_empty_batch_gives_nothing(segmenter):
    timings: dict[str, float] = {}
    segmenter.segment(random_images()[:1], timings=timings)
    assert set(timings) == {"preprocess", "forward", "postprocess"} and all(t >= 0 for t in timings.values())
    assert segmenter.segment([]) == []


def test_a_bad_image_names_its_batch_position(segmenter):
    with pytest.raises(ValueError, match="image 1 of the batch"):
        segmenter.segment([random_images()[0], np.zeros((8, 8), np.uint8)])


def test_is_a_segmenter_and_describes_itself_as_json(segmenter, checkpoints):
    assert isinstance(segmenter, Segmenter)
    assert segmenter.label_map.category_ids == tuple(LABELS["instance"])
    assert segmenter.semantic_label_map.category_ids == tuple(LABELS["semantic"])
    described = json.loads(json.dumps(segmenter.describe()))
    assert described["backend"] == "torchvision" and described["spec"] == segmenter.spec
    assert described["instance"]["model"] == INSTANCE
    assert described["instance"]["checkpoint"] == checkpoints["instance"]
    assert described["semantic"] == {
        "model": SEMANTIC,
        "checkpoint": checkpoints["semantic"],
        "weights": checkpoints["semantic"],
        "builder_kwargs": {},
    }
    assert described["label_map"]["category_ids"] == LABELS["instance"]
    assert described["semantic_label_map"]["names"] == ["N/A", "tree-merged", "sky-other-merged"]
    assert described["thresholds"] == {
        "score_threshold": 0.0,
        "mask_threshold": 0.5,
        "max_covered_fraction": 0.5,
        "stuff_area_threshold": 4096,
    }
    assert described["dtype"] == "float32" and described["device"] == "cpu"


# ------------------------------------------------------------------------------------------------ checkpoints


def test_a_memory_uri_checkpoint_loads_its_weights(checkpoints, options):
    label_map = LabelMap(tuple(LABELS["semantic"]))
    part = tvb.load_part(SEMANTIC, checkpoints["semantic"], label_map, options, torch.device("cpu"))
    loaded = part.module.state_dict()
    assert all(torch.equal(loaded[k], v) for k, v in checkpoints["semantic_state"].items())
    assert part.weights == checkpoints["semantic"] and not part.module.training


def test_a_checkpoint_with_other_classes_is_refused(checkpoints, options):
    label_map = LabelMap((None, 184, 187, 193))
    with pytest.raises(ValueError, match=r"to fit lraspp_mobilenet_v3_large with 4 classes"):
        tvb.load_part(SEMANTIC, checkpoints["semantic"], label_map, options, torch.device("cpu"))


def test_a_file_that_is_no_state_dict_is_refused(tmp_path, options):
    torch.save([torch.zeros(1)], tmp_path / "list.pth")
    with pytest.raises(ValueError, match="to hold a state_dict"):
        tvb.load_part(SEMANTIC, str(tmp_path / "list.pth"), LabelMap((None, 184)), options, torch.device("cpu"))


# ------------------------------------------------------------------------------------------------ specs


@pytest.mark.parametrize(
    ("target", "expected"),
    [
        ("maskrcnn_resnet50_fpn+fcn_resnet50", tvb.TorchvisionTarget("maskrcnn_resnet50_fpn", "fcn_resnet50")),
        (
            "maskrcnn_resnet50_fpn_v2@s3://models/mrcnn.pth+deeplabv3_resnet50@/ckpt/sem.pth",
            tvb.TorchvisionTarget(
                "maskrcnn_resnet50_fpn_v2", "deeplabv3_resnet50", "s3://models/mrcnn.pth", "/ckpt/sem.pth"
            ),
        ),
        (
            "maskrcnn_resnet50_fpn@s3://a+b/x@1.pth+lraspp_mobilenet_v3_large@memory://c+d.pth",
            tvb.TorchvisionTarget(
                "maskrcnn_resnet50_fpn", "lraspp_mobilenet_v3_large", "s3://a+b/x@1.pth", "memory://c+d.pth"
            ),
        ),
    ],
)
def test_parse_target_splits_builders_and_checkpoints(target, expected):
    assert tvb.parse_target(target) == expected


@pytest.mark.parametrize(
    "target",
    [
        "maskrcnn_resnet50_fpn",
        "maskrcnn_resnet50_fpn+",
        "fasterrcnn_resnet50_fpn+deeplabv3_resnet50",
        "maskrcnn_resnet50_fpn+deeplabv3_resnet18",
        "maskrcnn_resnet50_fpn@+deeplabv3_resnet50",
        "deeplabv3_resnet50+maskrcnn_resnet50_fpn",
        "",
    ],
)
def test_parse_target_errors_list_the_known_builders(target):
    with pytest.raises(ValueError) as caught:
        tvb.parse_target(target)
    for name in tvb.INSTANCE_BUILDERS + tvb.SEMANTIC_BUILDERS:
        assert name in str(caught.value)


def test_check_spec_validates_torchvision_targets():
    check_spec("torchvision:maskrcnn_resnet50_fpn_v2@s3://m/i.pth+deeplabv3_resnet101@s3://m/s.pth")
    with pytest.raises(ValueError, match="lraspp_mobilenet_v3_large"):
        check_spec("torchvision:maskrcnn_resnet50_fpn+unet")


# ------------------------------------------------------------------------------------------------ label maps


def load_with_labels(tmp_path, document: dict | None, target: str = f"{INSTANCE}@x.pth+{SEMANTIC}@y.pth"):
    """Loads with a label map; every case here fails before any weights are read."""
    label_map = None if document is None else write_label_map(tmp_path, document)
    return tvb.load_torchvision(target, ModelOptions(device="cpu", label_map=label_map))


def test_an_instance_label_mapped_to_stuff_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"instance label 2 to map to a thing category.*187 \('sky-other-merged'\)"):
        load_with_labels(tmp_path, {"instance": [None, 1, 187], "semantic": LABELS["semantic"]})


def test_a_semantic_label_mapped_to_a_thing_is_refused(tmp_path):
    with pytest.raises(ValueError, match=r"semantic label 1 to map to a stuff category.*1 \('person'\)"):
        load_with_labels(tmp_path, {"instance": LABELS["instance"], "semantic": [None, 1]})


def test_an_unknown_category_id_is_refused(tmp_path):
    with pytest.raises(ValueError, match="instance label 3 to map to a dataset category, but category id 999"):
        load_with_labels(tmp_path, {"instance": [None, 1, 2, 999], "semantic": LABELS["semantic"]})


def test_a_mapped_background_label_is_refused(tmp_path):
    with pytest.raises(ValueError, match="instance label 0"):
        load_with_labels(tmp_path, {"instance": [1, 2], "semantic": LABELS["semantic"]})


def test_a_missing_semantic_label_map_is_refused(tmp_path):
    with pytest.raises(ValueError, match="no `label_map` was given"):
        load_with_labels(tmp_path, None)
    with pytest.raises(ValueError, match="has no 'semantic' list"):
        load_with_labels(tmp_path, {"instance": LABELS["instance"]})


@pytest.mark.parametrize(
    "document", [{"instance": [None, 1], "semantic": [None, True]}, {"semantic": [None, 184], "stuff": []}, []]
)
def test_a_malformed_label_map_names_its_file(tmp_path, document):
    with pytest.raises(ValueError, match="labels-"):
        load_with_labels(tmp_path, document)


def test_default_weights_need_a_label_map_of_their_length(tmp_path):
    with pytest.raises(ValueError, match=r"21 entries.*deeplabv3_resnet50's default weights"):
        load_with_labels(tmp_path, LABELS, target=f"{INSTANCE}@x.pth+deeplabv3_resnet50")


def test_the_default_instance_labels_are_cocos_detection_labels():
    label_map = tvb.instance_label_map(None, "maskrcnn_resnet50_fpn_v2", CATEGORIES)
    assert len(label_map.category_ids) == 91 and label_map.category_ids[0] is None
    things = [c.id for c in CATEGORIES if c.isthing]
    assert sorted(c for c in label_map.category_ids if c is not None) == things
    for label, category_id in enumerate(label_map.category_ids):
        assert category_id in (None, label)  # COCO's detection label is its category id


def test_images_of_extreme_aspect_ratios_are_labelled(segmenter):
    images = [np.full((1, 3000, 3), 90, np.uint8), np.full((2000, 2, 3), 200, np.uint8)]
    for result, image in zip(segmenter.segment(images), images):
        check_result(result, image)
