"""One image through the port of a segmenter's family, with the segmenter's own model object and sizes."""

from __future__ import annotations

import numpy as np

from reference_ports import detectron2, detr, eomt


def reference(segmenter, image: np.ndarray):
    """The port's labels of one image, at the sizes of the segmenter's processor config.

    Args:
        segmenter: an ``hf:`` segmenter (its ``model``, ``family``, ``label_map``, ``categories``,
            ``preprocessing`` sizes and statistics, and ``source`` for OneFormer's tokenizer are used).

    Returns:
        ``(id_map, void_id, {their id: model label}, pixel_values)``.
    """
    family, model = segmenter.family, segmenter.model
    short, long = segmenter.preprocessing.shortest_edge, segmenter.preprocessing.longest_edge
    is_thing = {label: segmenter.categories.by_id(c).isthing for label, c in enumerate(segmenter.label_map.category_ids)
                if c is not None}
    if family == "detr":
        id_map, segments, pixel_values = detr.label(model, image, is_thing, size=short, max_size=long)
        void = -1 if segments else 0  # DETR lists id 0 as a segment; unlisted (nothing kept) it is VOID
        return id_map, void, {s["id"]: s["category_id"] for s in segments}, pixel_values
    if family in ("eomt", "eomt_dinov3"):
        stuff = {label for label, thing in is_thing.items() if not thing}
        mean, std = segmenter.preprocessing.mean, segmenter.preprocessing.std
        segment_ids, classes, pixel_values = eomt.label(model, image, stuff, long, mean, std)
        labels = {int(s): int(classes[segment_ids == s][0]) for s in np.unique(segment_ids) if s >= 0}
        return segment_ids, -1, labels, pixel_values
    tokenizer = None
    if family == "oneformer":
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(segmenter.source)
    panoptic, segments, pixel_values = detectron2.label(model, image, family, is_thing, tokenizer, short=short,
                                                        max_size=long)
    return panoptic.numpy(), 0, {s["id"]: s["category_id"] for s in segments}, pixel_values
