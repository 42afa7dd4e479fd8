"""Tests for segcore.fusion: small hand-built arrays whose expected id maps and segments are worked out by hand."""

import re

import numpy as np
import pytest

from segcore.fusion import (
    INSTANCE_SCORE_THRESHOLD,
    OVERLAP_THRESHOLD,
    STUFF_AREA_THRESHOLD,
    fuse_panoptic,
)

PERSON, CAR, ROAD, SKY, GRASS = 1, 3, 149, 187, 193  # COCO panoptic category ids


def masks_from(*grids: str) -> np.ndarray:
    """Returns (N, H, W) bool masks drawn as text: one grid per instance, rows split on spaces, '#' = inside."""
    return np.array([[[ch == "#" for ch in row] for row in grid.split()] for grid in grids], dtype=bool)


def id_map_from(grid: str) -> np.ndarray:
    """Returns an (H, W) int32 id map drawn as text: rows split on spaces, one digit per pixel."""
    return np.array([[int(ch) for ch in row] for row in grid.split()], dtype=np.int32)


def no_instances(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Returns empty masks (0, H, W) bool, scores (0,) float32 and category ids (0,) int64."""
    return np.zeros((0, height, width), bool), np.zeros(0, np.float32), np.zeros(0, np.int64)


def fuse(masks, scores, category_ids, semantic_map=None, **kwargs):
    """Calls fuse_panoptic on lists; the semantic map defaults to all VOID."""
    if semantic_map is None:
        semantic_map = np.zeros(masks.shape[1:], np.int64)
    return fuse_panoptic(
        masks, np.asarray(scores, np.float32), np.asarray(category_ids, np.int64), np.asarray(semantic_map), **kwargs
    )


def summary(segments):
    """Returns (id, category_id, isthing, area) per segment."""
    return [(s["id"], s["category_id"], s["isthing"], s["area"]) for s in segments]


def test_defaults_are_detectron2s():
    assert (OVERLAP_THRESHOLD, STUFF_AREA_THRESHOLD, INSTANCE_SCORE_THRESHOLD) == (0.5, 4096, 0.5)


# --- instances --------------------------------------------------------------------------------------------------


def test_single_instance_becomes_segment_1():
    masks = masks_from(".... .##. .##. ....")
    id_map, segments = fuse(masks, [0.75], [PERSON])
    assert id_map.dtype == np.int32
    np.testing.assert_array_equal(id_map, id_map_from("0000 0110 0110 0000"))
    assert segments == [{"id": 1, "category_id": PERSON, "isthing": True, "score": 0.75, "area": 4}]


def test_segment_values_are_plain_python_types():
    _, segments = fuse(masks_from("#."), [0.75], [PERSON])
    assert [type(v) for v in segments[0].values()] == [int, int, bool, float, int]


def test_higher_score_is_pasted_first_and_keeps_the_shared_pixel():
    # Given low then high: the high one (CAR) gets id 1 and the shared pixel; PERSON keeps 1 of its 2 pixels.
    masks = masks_from("##.", ".##")
    id_map, segments = fuse(masks, [0.625, 0.875], [PERSON, CAR])
    np.testing.assert_array_equal(id_map, id_map_from("211"))
    assert summary(segments) == [(1, CAR, True, 2), (2, PERSON, True, 1)]
    assert [s["score"] for s in segments] == [0.875, 0.625]


def test_equal_scores_keep_input_order():
    masks = masks_from("##.", ".##")
    id_map, segments = fuse(masks, [0.75, 0.75], [PERSON, CAR])
    np.testing.assert_array_equal(id_map, id_map_from("112"))
    assert summary(segments) == [(1, PERSON, True, 2), (2, CAR, True, 1)]


@pytest.mark.parametrize(
    "second, expected",
    [
        ("##.. ....", "1111 0000"),  # 2 of 2 covered = 1.0: dropped
        ("###. #...", "1111 0000"),  # 3 of 4 = 0.75: dropped
        ("###. ##..", "1111 0000"),  # 3 of 5 = 0.6: dropped
        ("#### ###.", "1111 0000"),  # 4 of 7 = 0.571: dropped
        ("##.. ##..", "1111 2200"),  # 2 of 4 = 0.5, exactly at the threshold, not above it: kept
        ("###. ###.", "1111 2220"),  # 3 of 6 = 0.5: kept
        ("##.. ###.", "1111 2220"),  # 2 of 5 = 0.4: kept
        ("#... ####", "1111 2222"),  # 1 of 5 = 0.2: kept
    ],
)
def test_overlap_threshold_boundary(second, expected):
    masks = masks_from("#### ....", second)  # the first instance covers the whole top row
    id_map, segments = fuse(masks, [0.875, 0.75], [PERSON, CAR])
    expected_map = id_map_from(expected)
    np.testing.assert_array_equal(id_map, expected_map)
    present = [i for i in (1, 2) if (expected_map == i).any()]
    assert summary(segments) == [(i, (PERSON, CAR)[i - 1], True, int((expected_map == i).sum())) for i in present]


def test_overlap_counts_pixels_of_every_earlier_segment():
    # Third mask: 4 px, 1 on the first and 1 on the second: 2/4 = 0.5, kept with its 2 free pixels.
    # Fourth mask: 4 px, on the first, the second and the third: 3/4 = 0.75, dropped.
    masks = masks_from("#... .... ....", ".#.. .... ....", "##.. ##.. ....", "##.. .#.. #...")
    id_map, segments = fuse(masks, [0.9, 0.8, 0.7, 0.6], [PERSON, PERSON, CAR, CAR])
    np.testing.assert_array_equal(id_map, id_map_from("1200 3300 0000"))
    assert summary(segments) == [(1, PERSON, True, 1), (2, PERSON, True, 1), (3, CAR, True, 2)]


def test_custom_overlap_threshold_uses_detectron2s_float_arithmetic():
    # 3 of 10 covered: 3 * 1.0 / 10 == 0.3 exactly in floating point, so at threshold 0.3 the second is kept.
    masks = masks_from("###.......", "##########")
    _, kept = fuse(masks, [0.9, 0.8], [PERSON, CAR], overlap_threshold=0.3)
    _, dropped = fuse(masks, [0.9, 0.8], [PERSON, CAR], overlap_threshold=0.29)
    assert [s["area"] for s in kept] == [3, 7]
    assert [s["area"] for s in dropped] == [3]


def test_fully_covered_instance_is_dropped_even_at_overlap_threshold_1():
    # detectron2 would list an empty segment here; a listed segment must appear in the id map.
    masks = masks_from("##", "#.", ".#")
    id_map, segments = fuse(masks, [0.9, 0.8, 0.7], [PERSON, CAR, CAR], overlap_threshold=1.0)
    np.testing.assert_array_equal(id_map, id_map_from("11"))
    assert summary(segments) == [(1, PERSON, True, 2)]


def test_overlap_threshold_0_drops_any_overlap():
    masks = masks_from("##..", "..##", ".##.")
    id_map, segments = fuse(masks, [0.9, 0.8, 0.7], [PERSON, CAR, CAR], overlap_threshold=0.0)
    np.testing.assert_array_equal(id_map, id_map_from("1122"))


def test_score_threshold_is_inclusive():
    # Sorted: 0.75 (third), 0.5 (first, equal to the threshold: kept), 0.4375 (second: dropped).
    masks = masks_from("#..", ".#.", "..#")
    id_map, segments = fuse(masks, [0.5, 0.4375, 0.75], [PERSON, CAR, CAR])
    np.testing.assert_array_equal(id_map, id_map_from("201"))
    assert [(s["category_id"], s["score"]) for s in segments] == [(CAR, 0.75), (PERSON, 0.5)]


def test_custom_score_threshold():
    masks = masks_from("#..", ".#.")
    _, segments = fuse(masks, [0.25, 0.125], [PERSON, CAR], instance_score_threshold=0.2)
    assert summary(segments) == [(1, PERSON, True, 1)]


def test_empty_mask_is_skipped_without_using_an_id():
    masks = masks_from("...", "#..", ".##")
    id_map, segments = fuse(masks, [0.9, 0.8, 0.7], [PERSON, CAR, CAR])
    np.testing.assert_array_equal(id_map, id_map_from("122"))
    assert summary(segments) == [(1, CAR, True, 1), (2, CAR, True, 2)]


# --- stuff ------------------------------------------------------------------------------------------------------


def test_stuff_follows_things_in_ascending_category_order_on_free_pixels_only():
    # The instance takes the two ROAD pixels, so ROAD has none left and makes no segment.
    masks = masks_from("##.. ##..")
    semantic_map = [[SKY, SKY, GRASS, SKY], [ROAD, ROAD, GRASS, GRASS]]
    id_map, segments = fuse(masks, [0.9], [PERSON], semantic_map, stuff_area_threshold=1)
    np.testing.assert_array_equal(id_map, id_map_from("1132 1133"))
    assert summary(segments) == [(1, PERSON, True, 4), (2, SKY, False, 1), (3, GRASS, False, 3)]
    assert segments[1]["score"] == 1.0


@pytest.mark.parametrize(
    "threshold, expected_map, expected",
    [
        (3, "1112 2210", [(1, SKY, False, 4), (2, GRASS, False, 3)]),
        (4, "1110 0010", [(1, SKY, False, 4)]),  # SKY's 4 pixels == threshold: kept; GRASS's 3: dropped
        (5, "0000 0000", []),
    ],
)
def test_stuff_area_threshold_boundary(threshold, expected_map, expected):
    semantic_map = [[SKY, SKY, SKY, GRASS], [GRASS, GRASS, SKY, 0]]
    id_map, segments = fuse(*no_instances(2, 4), semantic_map, stuff_area_threshold=threshold)
    np.testing.assert_array_equal(id_map, id_map_from(expected_map))
    assert summary(segments) == expected


def test_default_stuff_area_threshold_4096_is_inclusive():
    semantic_map = np.zeros((64, 128), np.int64)
    semantic_map[:, :64] = SKY  # 4096 pixels: kept
    semantic_map[:, 64:] = GRASS
    semantic_map[0, 64] = 0  # GRASS: 4095 pixels: dropped
    id_map, segments = fuse_panoptic(*no_instances(64, 128), semantic_map)
    assert summary(segments) == [(1, SKY, False, 4096)]
    np.testing.assert_array_equal(id_map, (semantic_map == SKY).astype(np.int32))


def test_stuff_area_counts_only_pixels_left_by_instances():
    masks = masks_from(".#..")
    semantic_map = [[SKY, SKY, SKY, SKY]]
    _, at_4 = fuse(masks, [0.9], [PERSON], semantic_map, stuff_area_threshold=4)
    id_map, at_3 = fuse(masks, [0.9], [PERSON], semantic_map, stuff_area_threshold=3)
    assert summary(at_4) == [(1, PERSON, True, 1)]
    assert summary(at_3) == [(1, PERSON, True, 1), (2, SKY, False, 3)]
    np.testing.assert_array_equal(id_map, id_map_from("2122"))


def test_pixels_of_a_dropped_instance_go_to_stuff():
    masks = masks_from("##..", "###.")  # the second is 2/3 covered: dropped, so its third pixel stays free
    id_map, segments = fuse(masks, [0.9, 0.8], [PERSON, CAR], [[SKY] * 4], stuff_area_threshold=1)
    np.testing.assert_array_equal(id_map, id_map_from("1122"))
    assert summary(segments) == [(1, PERSON, True, 2), (2, SKY, False, 2)]


def test_ignored_semantic_values_make_no_segments():
    # 0 is VOID, PERSON a thing class the semantic model also predicts, 255 an "ignore" label.
    semantic_map = [[0, PERSON, 255, SKY]]
    _, default = fuse(*no_instances(1, 4), semantic_map, stuff_area_threshold=1)
    id_map, custom = fuse(
        *no_instances(1, 4), semantic_map, stuff_area_threshold=1, ignored_semantic_ids=[0, PERSON, 255]
    )
    assert summary(default) == [(1, PERSON, False, 1), (2, SKY, False, 1), (3, 255, False, 1)]
    assert summary(custom) == [(1, SKY, False, 1)]
    np.testing.assert_array_equal(id_map, id_map_from("0001"))


def test_negative_semantic_values_can_be_ignored():
    semantic_map = np.array([[-1, SKY]], np.int32)
    id_map, segments = fuse(*no_instances(1, 2), semantic_map, stuff_area_threshold=1, ignored_semantic_ids={-1})
    np.testing.assert_array_equal(id_map, id_map_from("01"))
    assert summary(segments) == [(1, SKY, False, 1)]


def test_stuff_score_is_the_mean_confidence_over_the_segment():
    masks = masks_from(".#..")
    confidence = np.array([[0.5, 1.0, 0.75, 0.25]], np.float32)  # the instance takes the 1.0 pixel
    _, segments = fuse(
        masks, [0.9], [PERSON], [[SKY] * 4], stuff_area_threshold=1, semantic_confidence=confidence
    )
    assert segments[1]["score"] == 0.5  # (0.5 + 0.75 + 0.25) / 3


# --- empty inputs -----------------------------------------------------------------------------------------------


def test_no_instances_gives_stuff_only():
    id_map, segments = fuse(*no_instances(1, 3), [[SKY, SKY, GRASS]], stuff_area_threshold=1)
    np.testing.assert_array_equal(id_map, id_map_from("112"))
    assert summary(segments) == [(1, SKY, False, 2), (2, GRASS, False, 1)]


def test_nothing_to_paste_gives_all_void():
    id_map, segments = fuse(*no_instances(2, 3))
    np.testing.assert_array_equal(id_map, np.zeros((2, 3), np.int32))
    assert segments == []


def test_all_instances_below_score_threshold_give_all_void():
    id_map, segments = fuse(masks_from("##", ".#"), [0.25, 0.125], [PERSON, CAR])
    assert not id_map.any() and segments == []


def test_zero_sized_image():
    id_map, segments = fuse(*no_instances(0, 0))
    assert id_map.shape == (0, 0) and id_map.dtype == np.int32 and segments == []


def test_inputs_are_not_modified():
    masks = masks_from("##.", ".##")
    scores = np.array([0.6, 0.9], np.float32)
    semantic_map = np.full((1, 3), SKY)
    fuse_panoptic(masks, scores, np.array([PERSON, CAR]), semantic_map, stuff_area_threshold=0)
    np.testing.assert_array_equal(masks, masks_from("##.", ".##"))
    np.testing.assert_array_equal(scores, np.array([0.6, 0.9], np.float32))
    np.testing.assert_array_equal(semantic_map, np.full((1, 3), SKY))


# --- validation -------------------------------------------------------------------------------------------------

M = masks_from("#.", ".#")  # (2, 1, 2)
S = np.array([0.9, 0.8], np.float32)
C = np.array([PERSON, CAR], np.int64)
SEM = np.zeros((1, 2), np.int64)


@pytest.mark.parametrize(
    "args, kwargs, message",
    [
        ((M[0], S, C, SEM), {}, "Expected `masks` to be a 3-D array, but got shape (1, 2)"),
        ((M.astype(np.uint8), S, C, SEM), {}, "Expected `masks` to be of bool dtype, but got uint8"),
        ((M.tolist(), S, C, SEM), {}, "Expected `masks` to be a numpy array, but got list"),
        ((M, S[:1], C, SEM), {}, "same number of instances, but got 2, 1 and 2"),
        ((M, S, C[:1], SEM), {}, "same number of instances, but got 2, 2 and 1"),
        ((M, S[:, None], C, SEM), {}, "Expected `scores` to be a 1-D array, but got shape (2, 1)"),
        ((M, S.astype(np.int64), C, SEM), {}, "Expected `scores` to be of floating dtype, but got int64"),
        ((M, np.array([0.9, np.nan], np.float32), C, SEM), {}, "Expected `scores` to be finite"),
        ((M, S, C.astype(np.float32), SEM), {}, "Expected `category_ids` to be of integer dtype, but got float32"),
        ((M, S, C, np.zeros((2, 1), np.int64)), {}, "Expected `semantic_map` to have the masks' shape (1, 2)"),
        ((M, S, C, np.zeros((1, 2, 1), np.int64)), {}, "`semantic_map` to be a 2-D array, but got shape (1, 2, 1)"),
        ((M, S, C, SEM.astype(np.float64)), {}, "Expected `semantic_map` to be of integer dtype, but got float64"),
        ((M, S, C, SEM), {"semantic_confidence": np.ones((2, 1))}, "Expected `semantic_confidence` to have the"),
        (
            (M, S, C, SEM),
            {"semantic_confidence": np.ones((1, 2), int)},
            "Expected `semantic_confidence` to be of floating dtype, but got int64",
        ),
        ((M, S, C, SEM), {"overlap_threshold": -0.1}, "Expected `overlap_threshold` to be >= 0, but got -0.1"),
        ((M, S, C, SEM), {"overlap_threshold": float("nan")}, "Expected `overlap_threshold` to be a finite number"),
        ((M, S, C, SEM), {"stuff_area_threshold": -1}, "Expected `stuff_area_threshold` to be >= 0"),
        ((M, S, C, SEM), {"stuff_area_threshold": "4096"}, "Expected `stuff_area_threshold` to be a finite number"),
        ((M, S, C, SEM), {"instance_score_threshold": None}, "`instance_score_threshold` to be a finite number"),
        ((M, S, C, SEM), {"ignored_semantic_ids": 0}, "Expected `ignored_semantic_ids` to be an iterable of ints"),
        ((M, S, C, SEM), {"ignored_semantic_ids": [0.5]}, "Expected `ignored_semantic_ids` to be an iterable"),
    ],
)
def test_invalid_inputs_raise(args, kwargs, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        fuse_panoptic(*args, **kwargs)


# --- cross-check against a literal transliteration of detectron2 -----------------------------------------------


def detectron2_reference(masks, scores, category_ids, semantic_map, overlap, stuff_area, score_threshold):
    """detectron2's combine_semantic_and_instance_outputs, line by line in numpy (semantic 0 = ignored)."""
    panoptic_seg = np.zeros(semantic_map.shape, np.int32)
    current_segment_id, segments_info = 0, []
    for inst_id in np.argsort(-scores, kind="stable"):
        score = float(scores[inst_id])
        if score < score_threshold:
            break
        mask = masks[inst_id]
        mask_area = mask.sum()
        if mask_area == 0:
            continue
        intersect_area = (mask & (panoptic_seg > 0)).sum()
        if intersect_area * 1.0 / mask_area > overlap:
            continue
        mask = mask & (panoptic_seg == 0)
        current_segment_id += 1
        panoptic_seg[mask] = current_segment_id
        segments_info.append((current_segment_id, int(category_ids[inst_id]), True, int(mask.sum())))
    for label in np.unique(semantic_map).tolist():
        if label == 0:
            continue
        mask = (semantic_map == label) & (panoptic_seg == 0)
        if mask.sum() < stuff_area:
            continue
        current_segment_id += 1
        panoptic_seg[mask] = current_segment_id
        segments_info.append((current_segment_id, label, False, int(mask.sum())))
    return panoptic_seg, segments_info


@pytest.mark.parametrize("seed", range(40))
def test_matches_detectron2_on_random_inputs(seed):
    rng = np.random.default_rng(seed)
    height, width, count = 6, 7, int(rng.integers(0, 7))
    masks = np.zeros((count, height, width), bool)
    for mask in masks:  # random rectangles, so overlaps are frequent and of every ratio
        top, left = rng.integers(0, height), rng.integers(0, width)
        mask[top : top + rng.integers(0, 5), left : left + rng.integers(0, 5)] = True
    scores = rng.choice([0.25, 0.5, 0.75, 0.875], size=count).astype(np.float32)
    category_ids = rng.choice([PERSON, CAR], size=count)
    semantic_map = rng.choice([0, ROAD, SKY, GRASS], size=(height, width))
    overlap = float(rng.choice([0.25, 0.5, 0.75]))
    expected_map, expected = detectron2_reference(masks, scores, category_ids, semantic_map, overlap, 8, 0.5)
    id_map, segments = fuse_panoptic(
        masks, scores, category_ids, semantic_map, overlap_threshold=overlap, stuff_area_threshold=8
    )
    np.testing.assert_array_equal(id_map, expected_map)
    assert summary(segments) == expected
