"""EoMT (and EoMT on DINOv3) panoptic as tue-mps/eomt evaluates it.

Sources of the rules (read, not copied), ``training/lightning_module.py`` and
``training/mask_classification_panoptic.py``:
- ``scale_img_size_instance_panoptic``: factor = min(S / h, S / w), each side ``round(side * factor)``;
- ``resize_and_pad_imgs_instance_panoptic``: the uint8 image through ``PIL.Image.resize(..., BILINEAR)``, then
  zero (black) padding right and bottom to S x S, on the uint8 image;
- ``forward``: ``imgs / 255``, then the network normalises ``(x - mean) / std``: pad before normalise;
- ``eval_step``: mask logits ``F.interpolate(mask_logits, (S, S), mode="bilinear")``, then
  ``revert_resize_and_pad_logits_instance_panoptic``: crop to the scaled size, bilinear to the original size;
- ``to_per_pixel_preds_panoptic``: softmax max, keep real classes with score > 0.8, sigmoid, arg-max of
  score x probability, segment = won pixels with probability >= 0.5; dropped when an area is 0 or
  won / mask < 0.8; stuff merged per class; VOID = segment id -1.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image


def scale_img_size(size: tuple[int, int], side: int) -> list[int]:
    factor = min(side / size[0], side / size[1])
    return [round(s * factor) for s in size]


def preprocess(image: np.ndarray, side: int, mean, std) -> torch.Tensor:
    """The padded uint8 image, divided by 255 and normalised as the network does.  # (1, 3, S, S)"""
    new_h, new_w = scale_img_size(image.shape[:2], side)
    resized = np.array(Image.fromarray(image).resize((new_w, new_h), Image.BILINEAR))
    tensor = torch.from_numpy(resized).permute(2, 0, 1)
    padded = F.pad(tensor, [0, side - new_w, 0, side - new_h])  # uint8, value 0
    x = padded[None] / 255.0
    return (x - torch.tensor(mean).view(1, -1, 1, 1)) / torch.tensor(std).view(1, -1, 1, 1)


@torch.no_grad()
def label(model, image: np.ndarray, stuff_classes: set[int], side: int, mean, std, threshold: float = 0.8,
          overlap: float = 0.8):
    """One image through the original path.

    Returns:
        ``(segment_ids, class_ids, pixel_values)``: segment id per pixel, -1 = VOID # (H, W); class per pixel
        (the number of classes on VOID) # (H, W); the model input.
    """
    pixel_values = preprocess(image, side, mean, std)
    outputs = model(pixel_values=pixel_values)
    mask_logits = F.interpolate(outputs.masks_queries_logits, (side, side), mode="bilinear")
    scaled = scale_img_size(image.shape[:2], side)
    logits = mask_logits[0][:, : scaled[0], : scaled[1]]
    logits = F.interpolate(logits[None], image.shape[:2], mode="bilinear")[0]
    preds = per_pixel_panoptic(logits, outputs.class_queries_logits[0], stuff_classes, threshold, overlap)
    return preds[..., 1].numpy(), preds[..., 0].numpy(), pixel_values


def per_pixel_panoptic(mask_logits, class_logits, stuff_classes, threshold=0.8, overlap=0.8):
    """``to_per_pixel_preds_panoptic`` for one image: ``(H, W, 2)`` of (class, segment id)."""
    num_classes = class_logits.shape[-1] - 1
    scores, classes = class_logits.softmax(dim=-1).max(-1)
    preds = -torch.ones((*mask_logits.shape[-2:], 2), dtype=torch.long)
    preds[:, :, 0] = num_classes
    keep = classes.ne(num_classes) & (scores > threshold)
    if not keep.any():
        return preds
    masks = mask_logits.sigmoid()
    segments = -torch.ones(*masks.shape[-2:], dtype=torch.long)
    classes_map = torch.full(masks.shape[-2:], num_classes, dtype=torch.long)
    mask_ids = (scores[keep][..., None, None] * masks[keep]).argmax(0)
    stuff_segment_ids: dict[int, int] = {}
    segment_id = 0
    for k, class_id in enumerate(classes[keep].tolist()):
        orig_mask = masks[keep][k] >= 0.5
        new_mask = mask_ids == k
        final_mask = orig_mask & new_mask
        orig_area, new_area, final_area = orig_mask.sum().item(), new_mask.sum().item(), final_mask.sum().item()
        if orig_area == 0 or new_area == 0 or final_area == 0 or new_area / orig_area < overlap:
            continue
        if class_id in stuff_classes:
            if class_id in stuff_segment_ids:
                segments[final_mask] = stuff_segment_ids[class_id]
                classes_map[final_mask] = class_id
                continue
            stuff_segment_ids[class_id] = segment_id
        segments[final_mask] = segment_id
        classes_map[final_mask] = class_id
        segment_id += 1
    preds[:, :, 0] = classes_map
    preds[:, :, 1] = segments
    return preds
