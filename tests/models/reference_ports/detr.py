"""DETR panoptic as facebookresearch/detr evaluates it.

Sources of the rules (read, not copied):
- ``datasets/coco.py`` ``make_coco_transforms('val')``: ``T.RandomResize([800], max_size=1333)`` then ``ToTensor``
  and ``Normalize(ImageNet mean, std)``; ``datasets/transforms.py`` ``get_size_with_aspect_ratio`` (short side
  rounded when the long side caps it, the long side ``int``-truncated from it) and torchvision's ``resize`` of a
  PIL image (Pillow's BILINEAR);
- ``util/misc.py`` ``nested_tensor_from_tensor_list``: zero padding to the batch's largest image with a mask
  (one image here: no padding);
- ``models/segmentation.py`` ``PostProcessPanoptic.forward``: keep queries above 0.85; mask logits bilinear to the
  processed size; ``get_ids_area``: softmax over queries, arg-max, stuff queries of one class folded onto the
  first (first call only), the id image resized to the original size with Pillow's NEAREST, areas there; queries
  of area <= 4 dropped and the assignment redone until none is; segment ids 0..n-1.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

MEAN = [0.485, 0.456, 0.406]
STD = [0.229, 0.224, 0.225]


def get_size(image_size: tuple[int, int], size: int, max_size: int | None = None) -> tuple[int, int]:
    """``get_size_with_aspect_ratio`` of DETR's transforms; ``image_size`` is Pillow's (w, h); returns (h, w)."""
    w, h = image_size
    if max_size is not None:
        min_original_size = float(min((w, h)))
        max_original_size = float(max((w, h)))
        if max_original_size / min_original_size * size > max_size:
            size = int(round(max_size * min_original_size / max_original_size))
    if (w <= h and w == size) or (h <= w and h == size):
        return (h, w)
    if w < h:
        ow = size
        oh = int(size * h / w)
    else:
        oh = size
        ow = int(size * w / h)
    return (oh, ow)


def preprocess(image: np.ndarray, size: int = 800, max_size: int = 1333) -> torch.Tensor:
    """The normalised input of one image.  # (1, 3, h, w)"""
    picture = Image.fromarray(image)
    height, width = get_size(picture.size, size, max_size)
    resized = picture.resize((width, height), Image.BILINEAR)
    tensor = torch.from_numpy(np.array(resized)).permute(2, 0, 1).contiguous().float().div(255)
    tensor = (tensor - torch.tensor(MEAN).view(-1, 1, 1)) / torch.tensor(STD).view(-1, 1, 1)
    return tensor[None]


def id2rgb(id_map: np.ndarray) -> np.ndarray:
    color = np.zeros((*id_map.shape, 3), dtype=np.uint8)
    for channel in range(3):
        color[..., channel] = id_map % 256
        id_map = id_map // 256
    return color


def rgb2id(color: np.ndarray) -> np.ndarray:
    color = color.astype(np.int32)
    return color[..., 0] + 256 * color[..., 1] + 256 * 256 * color[..., 2]


@torch.no_grad()
def label(model, image: np.ndarray, is_thing: dict[int, bool], threshold: float = 0.85, size: int = 800,
          max_size: int = 1333):
    """One image through the original path.

    Returns:
        ``(id_map, segments_info, pixel_values)``: ids 0..n-1 (every id listed) # (H, W); ``{"id", "isthing",
        "category_id", "area"}`` (category_id = model label); the model input.
    """
    pixel_values = preprocess(image, size, max_size)
    mask = torch.ones(pixel_values.shape[0], *pixel_values.shape[2:], dtype=torch.int64)
    outputs = model(pixel_values=pixel_values, pixel_mask=mask)
    processed = tuple(pixel_values.shape[2:])
    return (*postprocess(outputs.logits[0], outputs.pred_masks[0], processed, image.shape[:2], is_thing, threshold),
            pixel_values)


def postprocess(cur_logits, cur_masks, size, target_size, is_thing, threshold=0.85):
    """``PostProcessPanoptic`` for one image; returns ``(id_map, segments_info)``."""
    scores, labels = cur_logits.softmax(-1).max(-1)
    keep = labels.ne(cur_logits.shape[-1] - 1) & (scores > threshold)
    cur_scores, cur_classes = scores[keep], labels[keep]
    cur_masks = cur_masks[keep]
    if cur_masks.shape[0]:
        cur_masks = F.interpolate(cur_masks[:, None], size, mode="bilinear").squeeze(1)
    height, width = size
    cur_masks = cur_masks.flatten(1) if cur_masks.shape[0] else torch.zeros((0, height * width))
    stuff_equiv_classes = defaultdict(list)
    for k, label_ in enumerate(cur_classes):
        if not is_thing[label_.item()]:
            stuff_equiv_classes[label_.item()].append(k)

    def get_ids_area(masks, scores, dedup=False):
        m_id = masks.transpose(0, 1).softmax(-1)
        if m_id.shape[-1] == 0:
            m_id = torch.zeros((height, width), dtype=torch.long)
        else:
            m_id = m_id.argmax(-1).view(height, width)
        if dedup:
            for equiv in stuff_equiv_classes.values():
                if len(equiv) > 1:
                    for eq_id in equiv:
                        m_id.masked_fill_(m_id.eq(eq_id), equiv[0])
        final_h, final_w = target_size
        seg_img = Image.fromarray(id2rgb(m_id.view(height, width).numpy()))
        seg_img = seg_img.resize(size=(final_w, final_h), resample=Image.NEAREST)
        m_id = torch.from_numpy(rgb2id(np.asarray(seg_img)))
        area = [m_id.eq(i).sum().item() for i in range(len(scores))]
        return area, m_id

    area, id_map = get_ids_area(cur_masks, cur_scores, dedup=True)
    if cur_classes.numel() > 0:
        while True:
            filtered_small = torch.as_tensor([area[i] <= 4 for i, c in enumerate(cur_classes)], dtype=torch.bool)
            if filtered_small.any().item():
                cur_scores = cur_scores[~filtered_small]
                cur_classes = cur_classes[~filtered_small]
                cur_masks = cur_masks[~filtered_small]
                area, id_map = get_ids_area(cur_masks, cur_scores)
            else:
                break
    segments_info = [{"id": i, "isthing": bool(is_thing[cur_classes[i].item()]),
                      "category_id": int(cur_classes[i].item()), "area": a} for i, a in enumerate(area)]
    return id_map.numpy(), segments_info
