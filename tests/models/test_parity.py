"""Golden parity: every family's labels equal its original repository's (the ports in ``reference_ports``), on
identical inputs and weights, for single images and mixed-size batches of landscape, portrait and square images.

The tiny random-weight models get a fixed forward hook (``make_decisive``) so several queries are kept with
confident classes and distinct masks; random weights alone collapse every query onto one class and one mask near
the threshold, where nothing would be tested.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from reference_ports import run
from reference_ports.compare import agreement, matched_ids
from segcore.models.preprocess import prepare_batch
from segcore.models.registry import ModelOptions, load_segmenter
from segcore.synthetic import DEMO_SIZES, demo_categories, make_demo_sample
from tiny_models import FAMILIES, make_decisive, save_tiny_model

COCO_IMAGES = ("000000142238.jpg", "000000439180.jpg")
PIXEL_AGREEMENT = 0.999


@pytest.fixture(scope="module")
def photos(coco_sample) -> list[np.ndarray]:
    """Landscape, portrait and square crops of the two COCO photos, and one whole photo."""
    first, second = (np.asarray(Image.open(coco_sample / "input_images" / name).convert("RGB")) for name in COCO_IMAGES)
    return [first[:300, :500], second[:400, 50:300], first[100:356, 200:456], second, first[:37, :101]]


@pytest.fixture(scope="module")
def confident_models(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("decisive")
    torch.set_num_threads(1)
    models = {}
    for family in FAMILIES:
        segmenter = load_segmenter(f"hf:{save_tiny_model(family, root / family)}", ModelOptions(device="cpu"),
                                   demo_categories())
        make_decisive(segmenter.model)
        models[family] = segmenter
    return models


def assert_same_labels(result, image, segmenter, minimum=PIXEL_AGREEMENT):
    """Our result of one image against the port's: pixels up to renumbering, and the categories of the pairs."""
    theirs, their_void, their_labels, _ = run.reference(segmenter, image)
    ours = result.id_map_numpy()
    assert agreement(ours, theirs, 0, their_void) >= minimum
    ours_category = {s["id"]: s["category_id"] for s in result.segments}
    to_category = segmenter.label_map.category_ids
    for our_id, their_id in matched_ids(ours, theirs, 0, their_void).items():
        if our_id != 0 and their_id != their_void:
            assert ours_category[our_id] == to_category[their_labels[their_id]]
    return len(their_labels)


@pytest.mark.parametrize("family", FAMILIES)
def test_a_mixed_size_batch_gets_the_reference_labels_of_each_image(family, confident_models, photos):
    segmenter = confident_models[family]
    results = segmenter.segment(photos)
    segments = [assert_same_labels(result, image, segmenter) for result, image in zip(results, photos)]
    assert max(segments) >= 3, "the test needs confidently kept queries"


@pytest.mark.parametrize("family", FAMILIES)
def test_the_model_input_equals_the_reference_input(family, confident_models, photos):
    segmenter = confident_models[family]
    for image in photos:
        _, _, _, expected = run.reference(segmenter, image)
        tensor = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1)
        pixel_values, _, _ = prepare_batch([tensor], segmenter.preprocessing)
        assert pixel_values.shape == expected.shape
        grey_levels = ((pixel_values - expected).abs() * torch.tensor(segmenter.preprocessing.std).view(1, 3, 1, 1)
                       * 255).max().item()
        assert grey_levels < 1e-3  # equal up to float rounding: Pillow's resize is reproduced exactly


@pytest.mark.parametrize("family", FAMILIES)
def test_an_image_gets_the_same_labels_alone_and_in_any_batch(family, confident_models, photos):
    segmenter = confident_models[family]
    together = segmenter.segment(photos)
    for image, result in zip(photos, together):
        alone = segmenter.segment([image])[0]
        assert np.array_equal(alone.id_map_numpy(), result.id_map_numpy())
        assert alone.segments == result.segments


def test_the_demo_model_equals_mask2former_on_its_scenes_and_on_photos(photos):
    segmenter = load_segmenter("demo", ModelOptions(device="cpu"))
    scenes = [make_demo_sample(5, index, size)[0] for index, size in enumerate(DEMO_SIZES * 4)]
    for result, image in zip(segmenter.segment(scenes), scenes):
        theirs, void, _, _ = run.reference(segmenter, image)
        assert agreement(result.id_map_numpy(), theirs, 0, void) == 1.0
    for result, image in zip(segmenter.segment(photos), photos):
        assert_same_labels(result, image, segmenter)
