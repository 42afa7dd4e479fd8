"""Agreement of two panoptic id maps up to renumbering."""

from __future__ import annotations

import numpy as np


def matched_ids(ours: np.ndarray, theirs: np.ndarray, ours_void: int, theirs_void: int) -> dict[int, int]:
    """A one-to-one pairing of our segment ids with theirs, greedily by overlap (VOID pairs with VOID only)."""
    pairs, counts = np.unique(np.stack([ours.ravel(), theirs.ravel()]).astype(np.int64), axis=1, return_counts=True)
    pairing = {ours_void: theirs_void}
    taken = {theirs_void}
    for index in np.argsort(-counts, kind="stable"):
        our_id, their_id = int(pairs[0, index]), int(pairs[1, index])
        if our_id in pairing or their_id in taken:
            continue
        pairing[our_id] = their_id
        taken.add(their_id)
    return pairing


def agreement(ours: np.ndarray, theirs: np.ndarray, ours_void: int = 0, theirs_void: int = -1) -> float:
    """The fraction of pixels where ``theirs`` holds the segment paired with ``ours``'s (VOID counts as a segment)."""
    pairing = matched_ids(ours, theirs, ours_void, theirs_void)
    ids, inverse = np.unique(ours, return_inverse=True)
    lookup = np.array([pairing.get(int(i), -(10**9)) for i in ids], dtype=np.int64)
    return float((lookup[inverse.reshape(ours.shape)] == theirs).mean())
