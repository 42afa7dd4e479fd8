"""Each ground-truth image is scored once per output: finds the ones scored by several samples across shards.

With ``--gt``, an image's rank is its annotation's position in the ground-truth JSON. A shard scores each
ground-truth image once (the first sample that matches it; later ones get ``bad_ground_truth``), but two shards
do not see each other: a tar corpus holding ``a/5.jpg`` and ``b/5.jpg`` in different shards would have one
annotation scored twice, and PQ would count it twice. The reduce and ``jobs.verify`` gather the ranks of the
evaluated images (the per-image records of each shard's statistics) and refuse such an output by name.

Memory is bounded by the ground truth, not the corpus: only ranks below ``RANK_STRIDE`` (those of ``--gt``)
are kept; ranks of ground truth embedded in the shards are ``shard index * RANK_STRIDE + position``, unique by
construction.
"""

from __future__ import annotations

from typing import Iterable, Mapping

RANK_STRIDE = 1_000_000_000  # embedded ground truth: rank = shard index * stride + position in the shard


class DuplicateTruth(ValueError):
    """One ground-truth image was scored by several samples; PQ would count it more than once."""


class TruthUse:
    """Which sample of which shard scored each ``--gt`` ground-truth image (rank -> (shard id, sample key))."""

    def __init__(self):
        self.first: dict[int, tuple[str, str]] = {}
        self.repeats: dict[int, list[tuple[str, str]]] = {}

    def add(self, shard_id: str, records: Iterable[Mapping]) -> None:
        """Notes a shard's per-image records (``rank`` and ``image_id``, the sample key)."""
        for record in records:
            rank = int(record["rank"])
            if rank >= RANK_STRIDE:
                continue
            seen = (shard_id, str(record["image_id"]))
            first = self.first.setdefault(rank, seen)
            if first != seen:
                self.repeats.setdefault(rank, []).append(seen)

    def duplicates(self) -> list[tuple[int, list[tuple[str, str]]]]:
        """``(rank, [(shard id, sample key), ...])`` of each ground-truth image scored more than once."""
        return [(rank, [self.first[rank], *self.repeats[rank]]) for rank in sorted(self.repeats)]

    @staticmethod
    def describe(rank: int, samples: list[tuple[str, str]]) -> str:
        named = ", ".join(f"{key!r} (shard {shard})" for shard, key in samples)
        return (f"the ground-truth image at position {rank} of the ground-truth JSON was scored {len(samples)} "
                f"times, by {named}")

    def check(self, limit: int = 5) -> None:
        """Raises DuplicateTruth naming the images scored more than once (the first ``limit``), and the fix."""
        if self.repeats:
            named = "; ".join(self.describe(*duplicate) for duplicate in self.duplicates()[:limit])
            raise DuplicateTruth(
                f"Expected each ground-truth image to be scored once, but {len(self.repeats)} were scored by "
                f"several samples, so PQ would count them more than once: {named}. Give each image a unique key "
                "(file name) across the input, or remove the copies, then rerun with --overwrite")
