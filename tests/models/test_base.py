"""Device helpers of the Segmenter contract: areas and boxes, one host transfer per batch, device and dtype checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from segcore.models.base import (PanopticResult, SegmentTable, finish_batch, id_maps_to_host, pack_to_host,
                                 resolve_dtype, segment_boxes, select_device)
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


@pytest.mark.parametrize("largest, dtype", [(1, np.uint8), (255, np.uint8), (256, np.int16), (32767, np.int16),
                                            (32768, np.int32)])
def test_packed_id_maps_come_back_exact_in_the_narrowest_type(largest, dtype):
    rng = np.random.default_rng(largest)
    shapes = [(5, 7), (1, 1), (4, 9), (6, 3)]
    maps = [torch.from_numpy(rng.integers(0, largest + 1, size=shape, dtype=np.int32)) for shape in shapes]
    maps[0][0, 0] = largest
    host = pack_to_host(maps, largest)
    assert [a.shape for a in host] == shapes
    assert all(a.dtype == dtype for a in host)
    for array, id_map in zip(host, maps):
        np.testing.assert_array_equal(array.astype(np.int64), id_map.numpy())


def test_packing_refuses_ids_the_narrow_type_would_wrap():
    with pytest.raises(ValueError, match=r"id map 1 .* \[0, 200\].*\[5, 300\]"):
        pack_to_host([torch.zeros((2, 2), dtype=torch.int32), torch.tensor([[300, 5]], dtype=torch.int32)], 200)
    with pytest.raises(ValueError, match=r"\[-1, 3\]"):
        pack_to_host([torch.tensor([[-1, 3]], dtype=torch.int32)], 200)


def test_id_maps_to_host_views_cpu_maps_and_packs_device_maps():
    maps = [torch.arange(12, dtype=torch.int32).reshape(3, 4), torch.full((2, 2), 7, dtype=torch.int32)]
    results = [PanopticResult(m, [{"id": int(i)} for i in m.unique() if i > 0]) for m in maps]
    on_host = id_maps_to_host(results)
    assert all(np.shares_memory(a, m.numpy()) for a, m in zip(on_host, maps))  # CPU: no copy
    assert id_maps_to_host([]) == []
    if torch.cuda.is_available():
        device = [PanopticResult(r.id_map.cuda(), r.segments) for r in results]
        copied = id_maps_to_host(device)
        assert all(a.dtype == np.uint8 for a in copied)
        for array, id_map in zip(copied, maps):
            np.testing.assert_array_equal(array, id_map.numpy())
