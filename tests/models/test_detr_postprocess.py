"""DETR's own post-processing on hand-made logits: no VOID, small segments dropped and reassigned, stuff folding,
Pillow's nearest-neighbour resize."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from segcore.models.base import finish_batch
from segcore.models.detr_postprocess import _nearest_axis, detr_panoptic
from segcore.models.postprocess import Geometry, LabelTables

CATEGORY_IDS = (1, 3, 18, 187, 193)  # labels 3 and 4 are stuff


def label_tables() -> LabelTables:
    return LabelTables(torch.tensor(CATEGORY_IDS), torch.tensor([True, True, True, False, False]),
                       torch.ones(5, dtype=torch.bool))


def queries(labels: list[int]) -> torch.Tensor:
    """Class logits of confident queries (one per label; -1: "no object")."""
    class_logits = torch.full((1, len(labels), 6), -10.0)
    for query, label in enumerate(labels):
        class_logits[0, query, label] = 10.0
    return class_logits


def run(class_logits, masks, output=(8, 8), threshold=0.85):
    geometry = Geometry(tuple(masks.shape[-2:]), tuple(masks.shape[-2:]), output)
    id_maps, tables = detr_panoptic(class_logits, masks, [geometry], label_tables(), threshold)
    return finish_batch(id_maps, tables)[0]


def test_every_pixel_goes_to_a_query_and_a_small_segment_is_reassigned():
    masks = torch.zeros((1, 3, 8, 8))
    masks[0, 0, :, :4] = 5.0  # left half
    masks[0, 1, :, 4:] = 5.0  # right half
    masks[0, 2, 2:4, 1:3] = 9.0  # 2 x 2 = 4 pixels inside the left half: area <= 4, dropped
    result = run(queries([0, 1, 2]), masks)
    assert (result.id_map == 0).sum() == 0  # no VOID: no mask threshold, no score weighting
    assert [(s["category_id"], s["area"]) for s in result.segments] == [(1, 32), (3, 32)]


def test_a_segment_of_five_pixels_stays():
    masks = torch.zeros((1, 3, 8, 8))
    masks[0, 0, :, :4] = 5.0
    masks[0, 1, :, 4:] = 5.0
    masks[0, 2, 2:4, 1:3] = 9.0
    masks[0, 2, 4, 1] = 9.0  # 5 pixels
    result = run(queries([0, 1, 2]), masks)
    assert sorted(s["area"] for s in result.segments) == [5, 27, 32]


def test_a_second_stuff_query_of_a_class_is_dropped_and_its_pixels_go_to_the_best_remaining_query():
    masks = torch.zeros((1, 3, 8, 8))
    masks[0, 0, :, :4] = 5.0  # sky, left
    masks[0, 1, :, 4:] = 5.0  # sky again, right: folded onto query 0 first, so its area is 0 and it is dropped
    masks[0, 2, :, 4:] = 2.0  # a person, weaker than query 1 on the right ...
    masks[0, 2, 4:, 4:] = 7.0  # ... but for the bottom right quarter, which it wins in the first round
    masks[0, 0, :, 4:6] = 1.0  # query 0 also reaches into the right half, but below the person there
    result = run(queries([3, 3, 0]), masks)
    # round 1: sky = left half + top right (query 1's pixels folded onto query 0); query 1 has area 0: dropped
    # round 2, without folding: the top right goes to the best remaining query there, the person
    assert [(s["category_id"], s["area"]) for s in result.segments] == [(187, 32), (1, 32)]


def test_nothing_kept_gives_an_all_void_map():
    result = run(queries([-1, -1]), torch.randn((1, 2, 8, 8)), output=(11, 9))
    assert result.id_map.shape == (11, 9) and not result.id_map.any() and result.segments == []


def test_the_score_threshold_is_strict():
    class_logits = torch.full((1, 1, 6), 0.0)
    class_logits[0, 0, 0] = float(np.log(0.85 * 5 / 0.15))  # softmax = 0.85 (up to float rounding)
    score = class_logits.softmax(-1).max().item()
    result = run(class_logits, torch.ones((1, 1, 8, 8)), threshold=score)
    assert result.segments == []


@pytest.mark.parametrize("in_size, out_size", [((5, 7), (13, 17)), ((200, 267), (480, 640)), ((9, 9), (3, 3))])
def test_the_id_map_is_resized_as_pillow_nearest(in_size, out_size):
    ids = np.arange(in_size[0] * in_size[1], dtype=np.int32).reshape(in_size)
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    resized = np.asarray(Image.fromarray(rgb).resize(out_size[::-1], Image.Resampling.NEAREST)).astype(np.int64)
    expected = resized[..., 0] + 256 * resized[..., 1] + 65536 * resized[..., 2]
    ours = ids[_nearest_axis(in_size[0], out_size[0])][:, _nearest_axis(in_size[1], out_size[1])]
    assert np.array_equal(ours, expected)


def test_a_softmax_tie_goes_to_the_earlier_query_as_in_the_original():
    masks = torch.zeros((1, 2, 8, 8))
    masks[0, 0] = 0.25
    masks[0, 1] = float(np.nextafter(np.float32(0.25), np.float32(1)))  # larger logit, by one float step
    softmax = masks[0].flatten(1).transpose(0, 1).softmax(-1)
    assert torch.equal(softmax[:, 0], softmax[:, 1])  # equal after the softmax: the original takes query 0
    result = run(queries([0, 1]), masks)
    assert [(s["category_id"], s["area"]) for s in result.segments] == [(1, 64)]
