"""Device helpers of the Segmenter contract: areas and boxes, one host transfer per batch, device and dtype checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcore.models.base import SegmentTable, finish_batch, resolve_dtype, segment_boxes, select_device
from segcore.synthetic import index_areas_and_bboxes


@pytest.mark.parametrize("seed", range(10))
def test_segment_boxes_equal_the_numpy_reference(seed):
    rng = np.random.default_rng(seed)
    id_map = rng.integers(0, 7, (int(rng.integers(1, 50)), int(rng.integers(1, 50))))
    id_map[id_map == 3] = 0  # an absent id
    areas, boxes = segment_boxes(torch.tensor(id_map, dtype=torch.int32), 9)
    expected_areas, expected_boxes = index_areas_and_bboxes(id_map, 9)
    assert np.array_equal(areas.numpy(), expected_areas) and np.array_equal(boxes.numpy(), expected_boxes)


def test_finish_batch_lists_exactly_the_ids_present_with_exact_scores():
    id_map = torch.tensor([[0, 1, 1], [3, 3, 1]], dtype=torch.int32)  # id 2 has no pixel
    table = SegmentTable(torch.tensor([0, 5, 6, 7]), torch.tensor([False, True, True, False]),
                         torch.tensor([0.0, 0.123456789, 0.5, 1.0]))
    (result,) = finish_batch([id_map], [table])
    assert [s["id"] for s in result.segments] == [1, 3]
    assert result.segments[0] == {"id": 1, "category_id": 5, "isthing": True, "score": 0.123457, "area": 3,
                                  "bbox": [1, 0, 2, 2]}
    assert result.segments[1]["bbox"] == [0, 1, 2, 1] and not result.segments[1]["isthing"]


def test_device_and_dtype_errors_list_the_allowed_values():
    assert select_device("cpu").type == "cpu"
    with pytest.raises(ValueError, match="bfloat16"):
        resolve_dtype("fp8")
    with pytest.raises(ValueError, match="cuda"):
        select_device("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA"):
            select_device("cuda")
