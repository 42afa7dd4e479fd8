"""The reduce's PQ accumulator: folding shard partials one by one gives the same per-class sums as the whole
list of matches (the reference's running sums bit for bit, the exact sums equal to math.fsum), whether shards
come in rank order, out of order, or with interleaved ranks."""

from __future__ import annotations

import json
import math
import random

import numpy as np
import pytest

from segcore.categories import Categories, Category
from segcore.metrics.pq import PQFold, PQPartial, class_stats, summarize

CATEGORIES = Categories([Category(i, f"c{i}", i < 4) for i in range(1, 8)])


def random_shards(seed: int, shards: int, interleaved: bool) -> list[PQPartial]:
    """Shard partials with many matches of awkward IoUs; ranks in disjoint runs, or dealt round-robin."""
    rng = np.random.default_rng(seed)
    images = shards * 6
    ranks = list(range(images))
    parts = [PQPartial() for _ in range(shards)]
    for rank in ranks:
        part = parts[rank % shards] if interleaved else parts[rank // 6]
        part.images += 1
        for gt_id in rng.choice(1000, size=int(rng.integers(0, 9)), replace=False):
            union = int(rng.integers(2, 10**7))
            intersection = int(rng.integers(union // 2 + 1, union + 1))
            category = int(rng.integers(1, 8))
            part.matches.append((rank, int(gt_id), int(rng.integers(1, 10**6)), category, intersection, union))
            part.counts.setdefault(category, [0, 0, 0])[0] += 1
        for category in rng.integers(1, 8, size=2):
            part.counts.setdefault(int(category), [0, 0, 0])[1 + int(rng.integers(0, 2))] += 1
    for part in parts:
        random.Random(seed).shuffle(part.matches)  # a shard's own order does not matter
    return parts


def folded(parts: list[PQPartial], order: list[int]) -> PQFold:
    documents = {f"s{i}": json.loads(json.dumps(parts[i].to_json())) for i in range(len(parts))}
    fold = PQFold()
    for i in order:
        fold.add(documents[f"s{i}"], f"s{i}")
    fold.refold(lambda keys: (documents[key] for key in keys))
    return fold


@pytest.mark.parametrize("interleaved", [False, True])
@pytest.mark.parametrize("shuffled", [False, True])
def test_folding_shards_equals_the_whole_partial_bit_for_bit(interleaved, shuffled):
    parts = random_shards(3, 40, interleaved)
    order = list(range(len(parts)))
    if shuffled:
        random.Random(1).shuffle(order)
    whole = PQPartial()
    for part in parts:
        whole += part
    fold = folded(parts, order)
    assert fold.images == whole.images
    expected, got = class_stats(whole, CATEGORIES), class_stats(fold, CATEGORIES)
    assert got == expected  # dataclass equality: counts, running float sums and exact sums, bit for bit
    assert summarize(fold, CATEGORIES) == summarize(whole, CATEGORIES)
    for category in CATEGORIES:
        ious = [m[4] / m[5] for m in whole.matches if m[3] == category.id]
        assert got[category.id].iou_exact == math.fsum(ious)


def test_in_order_shards_are_folded_as_they_come_and_out_of_order_ones_need_a_refold():
    parts = random_shards(5, 10, interleaved=False)
    documents = [part.to_json() for part in parts]
    fold = PQFold()
    for i, document in enumerate(documents):
        fold.add(document, f"s{i}")
    assert fold.in_order  # nothing kept: no refold needed
    out_of_order = PQFold()
    for i in (1, 0, *range(2, 10)):
        out_of_order.add(documents[i], f"s{i}")
    assert not out_of_order.in_order
    with pytest.raises(RuntimeError, match="refold"):
        out_of_order.class_stats(CATEGORIES)
    out_of_order.refold(lambda keys: (documents[int(key[1:])] for key in keys))
    assert out_of_order.class_stats(CATEGORIES) == fold.class_stats(CATEGORIES)


def test_a_summation_order_that_matters_is_the_reference_one():
    """IoUs whose float sum depends on the order: the fold gives the reference's, not the shard order's."""
    tiny, big = (1 << 52) + 1, 1 << 53  # IoU 0.5 + 2^-53 and 1.0
    first = PQPartial(counts={1: [2, 0, 0]}, images=1,
                      matches=[(0, 1, 1, 1, big, big), (0, 2, 2, 1, tiny, big)])
    second = PQPartial(counts={1: [1, 0, 0]}, images=1, matches=[(1, 1, 1, 1, tiny, big)])
    whole = first + second
    fold = folded([second, first], [0, 1])
    assert class_stats(fold, CATEGORIES)[1] == class_stats(whole, CATEGORIES)[1]


def test_a_partial_that_is_not_one_is_named():
    fold = PQFold()
    with pytest.raises(ValueError, match="pq/s7.json"):
        fold.add({"images": 1, "counts": {}, "matches": {"image_rank": [0]}}, "pq/s7.json")
    bad_iou = PQPartial(counts={1: [1, 0, 0]}, images=1, matches=[(0, 1, 1, 1, 2, 8)]).to_json()
    with pytest.raises(ValueError, match="IoU > 0.5.*pq/s8.json"):
        fold.add(bad_iou, "pq/s8.json")
