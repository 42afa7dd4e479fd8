"""Mask-classification post-processing on hand-made logits: the originals' resize chain, fusion, the MaskFormer and
Mask2Former segment rules, empty results, transformers agreement where their rules coincide."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from segcore.models.base import finish_batch
from segcore.models.postprocess import (
    Geometry,
    LabelTables,
    Thresholds,
    assign_pixels,
    panoptic_from_queries,
    resize_to_image,
)

N_LABELS = 5
ISTHING = [True, True, True, False, False]  # labels 3 and 4 are stuff: fused


def label_tables(known=(True,) * N_LABELS) -> LabelTables:
    category_ids = torch.tensor([c if k else -1 for c, k in zip((1, 3, 18, 187, 193), known)])
    return LabelTables(category_ids, torch.tensor(ISTHING), torch.tensor(known))


def random_queries(
    rng: np.random.Generator, n_queries: int, height: int, width: int, confident: bool = False, n_labels: int = N_LABELS + 1
):
    """Class logits (Q, L+1) and smooth mask logits (Q, h, w) with blob-like masks; labels drawn from 0..n_labels-1."""
    labels = rng.integers(0, n_labels, n_queries)
    class_logits = rng.normal(0, 1, (n_queries, N_LABELS + 1))
    class_logits[np.arange(n_queries), labels] += 30.0 if confident else rng.uniform(1, 6, n_queries)
    coarse = rng.normal(0, 4, (n_queries, 1, max(2, height // 3), max(2, width // 3)))
    masks = F.interpolate(torch.tensor(coarse, dtype=torch.float32), size=(height, width), mode="bilinear")[:, 0]
    return torch.tensor(class_logits, dtype=torch.float32), masks


def square(size: int) -> Geometry:
    return Geometry((size, size), (size, size), (size, size))


def run(class_logits, mask_logits, geometries, thresholds=Thresholds(score=0.5), labels=None, segment_threshold=True):
    id_maps, tables = panoptic_from_queries(
        class_logits, mask_logits, geometries, labels or label_tables(), thresholds, segment_threshold
    )
    return finish_batch(id_maps, tables)


def test_mask_logits_go_up_to_the_padded_input_then_are_cropped_then_resized():
    masks = torch.randn(4, 9, 13)
    geometry = Geometry(padded=(36, 52), resized=(33, 47), output=(61, 90))
    up = F.interpolate(masks[None], size=(36, 52), mode="bilinear", align_corners=False)[0, :, :33, :47]
    expected = F.interpolate(up[None], size=(61, 90), mode="bilinear", align_corners=False)[0]
    assert torch.equal(resize_to_image(masks, geometry), expected)
    one_step = F.interpolate(masks[None, :, :8, :12], size=(61, 90), mode="bilinear", align_corners=False)[0]
    assert not torch.allclose(resize_to_image(masks, geometry), one_step, atol=1e-3)  # not a single resize


@pytest.mark.parametrize("seed", range(3))
def test_each_image_of_a_batch_uses_its_own_geometry(seed):
    rng = np.random.default_rng(seed)
    class_logits = torch.stack([random_queries(rng, 12, 12, 12)[0] for _ in range(3)])
    masks = torch.tensor(rng.normal(0, 4, (3, 12, 12, 12)), dtype=torch.float32)
    geometries = [Geometry((48, 48), (48, 40), (30, 25)), Geometry((48, 48), (33, 48), (66, 96)), square(48)]
    batch = run(class_logits, masks, geometries)
    for index, geometry in enumerate(geometries):
        alone = run(class_logits[index : index + 1], masks[index : index + 1], [geometry])[0]
        assert batch[index].id_map.shape == geometry.output
        assert torch.equal(batch[index].id_map, alone.id_map) and batch[index].segments == alone.segments


def test_the_result_is_valid_panoptic():
    rng = np.random.default_rng(7)
    class_logits, masks = random_queries(rng, 15, 10, 10, confident=True)
    geometry = Geometry((40, 40), (30, 37), (37, 53))
    result = run(class_logits[None], masks[None], [geometry], Thresholds(0.5, 0.5, 0.3))[0]
    id_map = result.id_map.numpy()
    assert result.id_map.dtype == torch.int32 and id_map.shape == (37, 53)
    listed = {s["id"] for s in result.segments}
    assert set(np.unique(id_map)) - {0} == listed and len(listed) > 0
    for segment in result.segments:
        ys, xs = np.nonzero(id_map == segment["id"])
        assert segment["area"] == ys.size
        assert segment["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]
        assert segment["category_id"] in (1, 3, 18, 187, 193) and 0.5 < segment["score"] <= 1.0


def two_region_queries(first_label: int, second_label: int, third_label: int = 0):
    """Three confident queries: left half, right half, and a small square inside the left half."""
    class_logits = torch.full((1, 3, N_LABELS + 1), -10.0)
    for query, label in enumerate((first_label, second_label, third_label)):
        class_logits[0, query, label] = 10.0 - query  # distinct scores, all near 1
    masks = torch.full((1, 3, 8, 8), -20.0)
    masks[0, 0, :, :4] = 3.0
    masks[0, 1, :, 4:] = 3.0
    masks[0, 2, 2:4, 1:3] = 6.0  # wins over query 0 there
    return class_logits, masks


def test_stuff_queries_of_one_class_are_fused_into_one_segment():
    class_logits, masks = two_region_queries(4, 4, third_label=0)
    result = run(class_logits, masks, [square(8)])[0]
    ids = [s["id"] for s in result.segments]
    assert len(ids) == len(set(ids)) == 2
    stuff = next(s for s in result.segments if s["category_id"] == 193)
    assert stuff["area"] == 64 - 4 and not stuff["isthing"]
    assert stuff["score"] == pytest.approx(torch.softmax(class_logits[0, 0], -1).max().item(), abs=1e-6)
    assert np.unique(result.id_map.numpy()).tolist() == sorted(ids)


def test_thing_queries_of_one_class_stay_separate():
    class_logits, masks = two_region_queries(1, 1)
    result = run(class_logits, masks, [square(8)])[0]
    assert [s["category_id"] for s in result.segments] == [3, 3, 1]
    assert len({s["id"] for s in result.segments}) == 3


@pytest.mark.parametrize("case", ["no_object", "below_threshold", "unmapped_label"])
def test_nothing_kept_gives_an_all_void_int32_map(case):
    class_logits, masks = two_region_queries(0, 1)
    labels, thresholds = label_tables(), Thresholds(score=0.5)
    if case == "no_object":
        class_logits[..., -1] = 50.0
    elif case == "below_threshold":
        thresholds = Thresholds(score=1.0)
    else:
        labels = label_tables(known=(False, False, True, True, True))
        class_logits[0, 2] = -10.0
        class_logits[0, 2, 0] = 10.0
    result = run(class_logits, masks, [Geometry((8, 8), (8, 8), (11, 9))], thresholds, labels)[0]
    assert result.id_map.dtype == torch.int32 and result.id_map.shape == (11, 9)
    assert not result.id_map.any() and result.segments == []


def test_an_empty_batch_position_does_not_disturb_the_others():
    class_logits, masks = two_region_queries(0, 1)
    empty = class_logits.clone()
    empty[..., -1] = 50.0
    results = run(torch.cat([empty, class_logits]), torch.cat([masks, masks]), [square(8)] * 2)
    assert results[0].segments == [] and len(results[1].segments) == 3


def transformers_eomt(class_logits, masks, size, thresholds, stuff_labels):
    from transformers import EomtImageProcessor
    from transformers.modeling_outputs import ModelOutput

    processor = EomtImageProcessor(size={"shortest_edge": size, "longest_edge": size})
    outputs = ModelOutput(class_queries_logits=class_logits, masks_queries_logits=masks)
    return processor.post_process_panoptic_segmentation(
        outputs, target_sizes=[(size, size)], threshold=thresholds.score, mask_threshold=thresholds.mask,
        overlap_mask_area_threshold=thresholds.overlap, stuff_classes=stuff_labels,
    )[0]


@pytest.mark.parametrize("seed", range(6))
def test_agrees_with_transformers_eomt_on_unpadded_images(seed):
    rng = np.random.default_rng(100 + seed)
    class_logits, masks = random_queries(rng, 20, 16, 16)
    thresholds = Thresholds(score=float(rng.uniform(0.3, 0.8)), mask=0.5, overlap=float(rng.uniform(0.3, 0.9)))
    ours = run(class_logits[None], masks[None], [square(64)], thresholds)[0]
    theirs = transformers_eomt(class_logits[None], masks[None], 64, thresholds, stuff_labels=[3, 4])
    expected = theirs["segmentation"] + 1  # transformers: -1 is void, ids from 0
    assert torch.equal(ours.id_map.long(), expected)
    categories = (1, 3, 18, 187, 193)
    assert [(s["id"], s["category_id"]) for s in ours.segments] == [
        (s["id"] + 1, categories[s["label_id"]]) for s in theirs["segments_info"]
    ]


def transformers_detr(class_logits, masks, thresholds, fuse):
    from transformers import DetrImageProcessor
    from transformers.modeling_outputs import ModelOutput

    outputs = ModelOutput(logits=class_logits, pred_masks=masks)
    return DetrImageProcessor().post_process_panoptic_segmentation(
        outputs, threshold=thresholds.score, mask_threshold=thresholds.mask,
        overlap_mask_area_threshold=thresholds.overlap, label_ids_to_fuse=fuse, target_sizes=[masks.shape[2:]],
    )[0]


@pytest.mark.parametrize("seed", range(4))
def test_agrees_with_transformers_detr_where_their_rules_coincide(seed):
    # DETR/MaskFormer/Mask2Former post-processing in transformers weighs the mask area by the class score and does
    # not require the winner's probability to pass the mask threshold; with confident classes (score 1.0) and a
    # confident query at every pixel the two rule sets coincide.
    rng = np.random.default_rng(200 + seed)
    class_logits, masks = random_queries(rng, 12, 20, 24, confident=True, n_labels=3)  # things only: no fusion
    best = masks.argmax(0)
    masks.scatter_(0, best[None], masks.gather(0, best[None]).abs() + 3.0)
    thresholds = Thresholds(score=0.5, mask=0.5, overlap=0.6)
    ours = run(class_logits[None], masks[None], [Geometry((20, 24), (20, 24), (20, 24))], thresholds)[0]
    theirs = transformers_detr(class_logits[None], masks[None], thresholds, fuse=set())
    assert torch.equal(ours.id_map, theirs["segmentation"])
    assert [s["id"] for s in ours.segments] == sorted({s["id"] for s in theirs["segments_info"]})


def test_query_chunks_bound_memory_and_give_the_same_segments():
    rng = np.random.default_rng(11)
    _, masks = random_queries(rng, 9, 12, 10)
    scores = torch.tensor(rng.uniform(0.5, 1.0, 9), dtype=torch.float32)
    scores[3] = scores[5]  # equal scores: ties must go to the earlier query in both
    masks[5] = masks[3]
    geometry = Geometry((48, 40), (46, 40), (61, 43))
    whole = assign_pixels(masks, scores, geometry, 0.5)
    chunked = assign_pixels(masks, scores, geometry, 0.5, budget=2 * (48 * 40 + 2 * 61 * 43))  # 2 queries a chunk
    for a, b in zip(whole, chunked):
        assert torch.equal(a, b)
    assert not (whole[0] == 5).any()


def test_maskformer_keeps_every_won_pixel_where_mask2former_leaves_void():
    class_logits, masks = two_region_queries(0, 1)
    masks[0, 0, :, :4] = -0.5  # query 0 wins the left half with probability 0.38 < 0.5: its mask is empty
    masks[0, 0, 0, 0] = 3.0  # one strong pixel, so its mask is not empty (ratio = won / mask area is large)
    thresholds = Thresholds(score=0.5, mask=0.5, overlap=0.8)
    with_void = run(class_logits, masks, [square(8)], thresholds, segment_threshold=True)[0]
    without = run(class_logits, masks, [square(8)], thresholds, segment_threshold=False)[0]
    assert (with_void.id_map == 0).sum() > 0
    assert (without.id_map == 0).sum() == 0
    assert len(without.segments) == len(with_void.segments) == 3


def test_a_query_keeping_exactly_the_overlap_fraction_is_a_segment():
    class_logits, masks = two_region_queries(0, 1, 2)  # query 2 (a 2x2 square) takes 4 of query 0's 32 pixels
    ratio = (32 - 4) / 32  # 0.875
    at = run(class_logits, masks, [square(8)], Thresholds(score=0.5, mask=0.5, overlap=ratio))[0]
    above = run(class_logits, masks, [square(8)], Thresholds(score=0.5, mask=0.5, overlap=ratio + 1e-9))[0]
    assert len(at.segments) == 3 and len(above.segments) == 2
