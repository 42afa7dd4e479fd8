"""MaskFormer, Mask2Former and OneFormer as their original repositories evaluate COCO panoptic (detectron2).

Sources of the rules (read, not copied):
- detectron2 ``data/transforms/augmentation_impl.py`` ``ResizeShortestEdge.get_output_shape`` (both sides scaled by
  one factor, each ``int(x + 0.5)``; MIN_SIZE_TEST 800, MAX_SIZE_TEST 1333) and ``transform.py``
  ``ResizeTransform.apply_image`` (a uint8 image goes through ``PIL.Image.resize(..., BILINEAR)``);
- the models' ``forward``: ``(x - pixel_mean) / pixel_std`` on 0..255 values with PIXEL_MEAN
  [123.675, 116.280, 103.530] and PIXEL_STD [58.395, 57.120, 57.375], then ``ImageList.from_tensors(images, 32)``:
  zeros bottom and right to a multiple of 32;
- mask logits bilinearly upsampled to the padded size, then ``sem_seg_postprocess``: crop to the resized image,
  bilinear to the original size; sigmoid inside ``panoptic_inference``;
- ``panoptic_inference`` (Mask2Former ``maskformer_model.py``, OneFormer ``oneformer_model.py``, MaskFormer
  ``mask_former_model.py``), per query in a Python loop; MaskFormer's segment is every pixel the query wins, the
  other two keep only those at probability >= 0.5;
- OneFormer's task input: the tokens of "The task is panoptic", zero-padded to the task length.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

PIXEL_MEAN = [123.675, 116.280, 103.530]
PIXEL_STD = [58.395, 57.120, 57.375]


def shortest_edge_shape(height: int, width: int, short: int, max_size: int) -> tuple[int, int]:
    """``ResizeShortestEdge.get_output_shape``."""
    size = short * 1.0
    scale = size / min(height, width)
    if height < width:
        new_height, new_width = size, scale * width
    else:
        new_height, new_width = scale * height, size
    if max(new_height, new_width) > max_size:
        scale = max_size * 1.0 / max(new_height, new_width)
        new_height = new_height * scale
        new_width = new_width * scale
    return int(new_height + 0.5), int(new_width + 0.5)


def preprocess(image: np.ndarray, short: int = 800, max_size: int = 1333, divisibility: int = 32):
    """The model input of one image (a batch of one) and its resized size."""
    height, width = image.shape[:2]
    new_height, new_width = shortest_edge_shape(height, width, short, max_size)
    resized = np.asarray(Image.fromarray(image).resize((new_width, new_height), Image.BILINEAR))
    pixels = torch.as_tensor(np.ascontiguousarray(resized.transpose(2, 0, 1)).astype("float32"))
    pixels = (pixels - torch.tensor(PIXEL_MEAN).view(-1, 1, 1)) / torch.tensor(PIXEL_STD).view(-1, 1, 1)
    padded_height = int(math.ceil(new_height / divisibility) * divisibility)
    padded_width = int(math.ceil(new_width / divisibility) * divisibility)
    pixels = F.pad(pixels, [0, padded_width - new_width, 0, padded_height - new_height], value=0.0)
    return pixels[None], (new_height, new_width)


def task_inputs(tokenizer, length: int) -> torch.Tensor:
    """OneFormer's panoptic task tokens, padded with zeros."""
    tokens = tokenizer("The task is panoptic".lower())["input_ids"][:length]
    return torch.tensor([tokens + [0] * (length - len(tokens))])


@torch.no_grad()
def label(model, image: np.ndarray, family: str, is_thing: dict[int, bool], tokenizer=None,
          threshold: float = 0.8, overlap: float = 0.8, short: int = 800, max_size: int = 1333):
    """One image through the original path.

    Returns:
        ``(panoptic_seg, segments_info, pixel_values)``: int32 ids, 0 = VOID # (H, W); ``{"id", "isthing",
        "category_id"}`` per segment (category_id = model label); the model input.
    """
    pixel_values, (new_height, new_width) = preprocess(image, short, max_size)
    inputs = {"pixel_values": pixel_values}
    if family == "oneformer":
        inputs["task_inputs"] = task_inputs(tokenizer, model.config.task_seq_len)
    outputs = model(**inputs)
    mask_pred = F.interpolate(outputs.masks_queries_logits, size=pixel_values.shape[-2:], mode="bilinear",
                              align_corners=False)[0]
    mask_pred = mask_pred[:, :new_height, :new_width].expand(1, -1, -1, -1)
    mask_pred = F.interpolate(mask_pred, size=image.shape[:2], mode="bilinear", align_corners=False)[0]
    panoptic_seg, segments = panoptic_inference(outputs.class_queries_logits[0], mask_pred, family, is_thing,
                                                threshold, overlap)
    return panoptic_seg, segments, pixel_values


def panoptic_inference(mask_cls, mask_pred, family, is_thing, threshold=0.8, overlap=0.8):
    """The originals' ``panoptic_inference`` for one image."""
    scores, labels = F.softmax(mask_cls, dim=-1).max(-1)
    mask_pred = mask_pred.sigmoid()
    keep = labels.ne(mask_cls.shape[-1] - 1) & (scores > threshold)
    cur_scores, cur_classes, cur_masks = scores[keep], labels[keep], mask_pred[keep]
    cur_prob_masks = cur_scores.view(-1, 1, 1) * cur_masks
    height, width = cur_masks.shape[-2:]
    panoptic_seg = torch.zeros((height, width), dtype=torch.int32)
    segments_info = []
    current_segment_id = 0
    if cur_masks.shape[0] == 0:
        return panoptic_seg, segments_info
    cur_mask_ids = cur_prob_masks.argmax(0)
    stuff_memory_list: dict[int, int] = {}
    for k in range(cur_classes.shape[0]):
        pred_class = cur_classes[k].item()
        isthing = is_thing[pred_class]
        mask_area = (cur_mask_ids == k).sum().item()
        original_area = (cur_masks[k] >= 0.5).sum().item()
        if family == "maskformer":
            mask = cur_mask_ids == k
            exists = mask_area > 0 and original_area > 0
        else:
            mask = (cur_mask_ids == k) & (cur_masks[k] >= 0.5)
            exists = mask_area > 0 and original_area > 0 and mask.sum().item() > 0
        if not exists:
            continue
        if mask_area / original_area < overlap:
            continue
        if not isthing:
            if int(pred_class) in stuff_memory_list:
                panoptic_seg[mask] = stuff_memory_list[int(pred_class)]
                continue
            stuff_memory_list[int(pred_class)] = current_segment_id + 1
        current_segment_id += 1
        panoptic_seg[mask] = current_segment_id
        segments_info.append({"id": current_segment_id, "isthing": bool(isthing), "category_id": int(pred_class)})
    return panoptic_seg, segments_info
