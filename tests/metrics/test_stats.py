"""Label statistics: hand-counted values, and merged partials equal to the statistics of the whole."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from segcore.metrics.stats import SIZE_BINS, LabelStats, format_summary, size_bin, summary
from segcore.synthetic import demo_categories

SEGMENT = st.fixed_dictionaries({
    "category_id": st.sampled_from([1, 3, 18, 187, 193]),
    "isthing": st.booleans(),
    "area": st.integers(1, 5000),
})
IMAGE = st.one_of(
    st.tuples(st.just("ok"), st.lists(SEGMENT, max_size=6)),
    st.tuples(st.sampled_from(["decode_error", "too_large"]), st.none()),
)


def stats_of(images) -> LabelStats:
    stats = LabelStats()
    for status, segments in images:
        if segments is None:
            stats.add_failure(status)
        else:
            stats.add_image(100, 100, segments, status)
    return stats


def test_hand_counted_image():
    stats = LabelStats()
    stats.add_image(10, 10, [{"category_id": 1, "isthing": True, "area": 30},
                             {"category_id": 1, "isthing": True, "area": 1},
                             {"category_id": 187, "isthing": False, "area": 64}])
    stats.add_failure("decode_error")
    assert stats.images == 2 and stats.pixels == 100 and stats.unlabelled_pixels == 5
    assert stats.segments == {1: 2, 187: 1} and stats.category_pixels == {1: 31, 187: 64}
    assert stats.category_images == {1: 1, 187: 1} and stats.things_per_image == {2: 1}
    assert [size_bin(a) for a in (1, 30, 64, 2**40)] == [0, 4, 6, SIZE_BINS - 1]
    assert stats.size_histogram[0] == stats.size_histogram[4] == stats.size_histogram[6] == 1
    document = summary(stats, demo_categories())
    assert document["labelled_images"] == 1 and document["statuses"] == {"decode_error": 1, "ok": 1}
    assert document["per_class"][1]["pixel_fraction"] == 0.31
    table = format_summary(document)
    assert "| person | yes | 2 | 1 | 31.00 |" in table and "| [2^6, 2^7) | 1 |" in table


@settings(max_examples=50, deadline=None)
@given(st.lists(IMAGE, max_size=12), st.integers(0, 12))
def test_merged_partials_equal_the_whole_and_survive_json(images, cut):
    whole = stats_of(images)
    merged = stats_of(images[:cut])
    merged += LabelStats.from_json(json.loads(json.dumps(stats_of(images[cut:]).to_json())))
    assert merged.to_json() == whole.to_json()
    assert merged.images == len(images)
