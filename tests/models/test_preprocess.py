"""Each family's reference pre-processing: resize rules, pad value and order, normalisation."""

from __future__ import annotations

import pytest
import torch

from segcore.models.preprocess import Preprocessing, prepare_batch

COCO_SIZE = {"size": {"shortest_edge": 800, "longest_edge": 1333}}


def test_detectron2_rounds_both_sides_and_pads_to_a_multiple_of_32():
    mask2former = Preprocessing.from_config({**COCO_SIZE, "size_divisor": 32}, "mask2former")
    assert mask2former.resized_size(480, 640) == (800, 1067)  # 1066.67 rounded up; transformers truncates to 1066
    assert mask2former.batch_key(480, 640) == (800, 1088)  # padded, never stretched
    assert mask2former.resized_size(300, 1200) == (333, 1333)  # long side capped at 1333: 333.25 x 1333
    assert mask2former.padded_size([(333, 1333), (800, 1067)]) == (800, 1344)


def test_a_transformers_square_size_falls_back_to_the_reference_evaluation_size():
    converted = Preprocessing.from_config({"size": {"height": 384, "width": 384}, "size_divisor": 32}, "mask2former")
    assert (converted.shortest_edge, converted.longest_edge) == (800, 1333)
    oneformer = Preprocessing.from_config({}, "oneformer")  # no size_divisor in OneFormer's processor config
    assert oneformer.size_divisor == 32 and oneformer.batch_key(480, 640) == (800, 1088)


def test_detr_truncates_the_long_side_from_the_rounded_short_side():
    detr = Preprocessing.from_config(COCO_SIZE, "detr")
    assert detr.resized_size(480, 640) == (800, 1066)
    assert detr.resized_size(213, 640) == (444, 1334)  # DETR's own rule; transformers' gives 444 x 1333
    assert detr.resized_size(800, 1000) == (800, 1000)  # already at size
    assert detr.batch_key(480, 640) == (800, 1066)  # DETR pads to the batch's largest image: key = resized size


def test_eomt_fits_the_long_side_to_the_square():
    eomt = Preprocessing.from_config({"size": {"shortest_edge": 640, "longest_edge": 640}}, "eomt")
    assert eomt.resized_size(480, 640) == (480, 640)
    assert eomt.resized_size(1000, 500) == (640, 320)
    assert eomt.resized_size(300, 400) == (480, 640)  # small images are enlarged
    assert eomt.batch_key(300, 400) == eomt.batch_key(1000, 500) == (640, 640)


def test_a_family_without_a_reference_rule_is_refused():
    with pytest.raises(ValueError, match="eomt_dinov3"):
        Preprocessing.from_config(COCO_SIZE, "videomt")


def images() -> list[torch.Tensor]:
    return [torch.full((3, 40, 80), 255, dtype=torch.uint8), torch.zeros((3, 50, 50), dtype=torch.uint8)]


def test_eomt_pads_the_uint8_image_with_black_before_normalising():
    eomt = Preprocessing.from_config({"size": {"shortest_edge": 64, "longest_edge": 64}}, "eomt")
    pixel_values, pixel_mask, resized = prepare_batch(images(), eomt)
    assert resized == [(32, 64), (64, 64)] and pixel_values.shape == (2, 3, 64, 64)
    black = (0 - 0.485) / 0.229  # the padding is black, normalised: not 0 (the mean colour)
    assert torch.allclose(pixel_values[0, 0, 32:], torch.full((32, 64), black))
    assert pixel_mask[0, 32:].sum() == 0 and pixel_mask[1].all()


@pytest.mark.parametrize("family", ["mask2former", "detr"])
def test_detectron2_and_detr_pad_with_zero_after_normalising(family):
    preprocessing = Preprocessing.from_config({"size": {"shortest_edge": 32, "longest_edge": 64}}, family)
    pixel_values, pixel_mask, resized = prepare_batch(images(), preprocessing)
    assert resized == [(32, 64), (32, 32)] and pixel_values.shape == (2, 3, 32, 64)
    assert (pixel_values[1, :, :, 32:] == 0).all() and pixel_mask[1, :, 32:].sum() == 0
    white = torch.full((32, 64), (1.0 - 0.485) / 0.229)
    torch.testing.assert_close(pixel_values[0, 0], white, rtol=0, atol=1e-6)
