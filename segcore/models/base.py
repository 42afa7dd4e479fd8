"""The Segmenter contract shared by every backend, and the device-side helpers they have in common."""

from __future__ import annotations

import contextlib
import time
import warnings
from dataclasses import dataclass, field
from typing import Protocol, Sequence, runtime_checkable

import numpy as np
import torch

from segcore.categories import Categories, LabelMap

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class PanopticResult:
    """One image's panoptic segmentation.

    Attributes:
        id_map: segment id per pixel at the image's own size, 0 = VOID; stays on the segmenter's device until
            :meth:`id_map_numpy` is called.  # (H, W) int32
        segments: one dict per segment id present in ``id_map``, in id order: ``{"id", "category_id" (dataset
            id), "isthing", "score", "area", "bbox" ([x, y, w, h])}``.
    """

    id_map: torch.Tensor
    segments: list[dict] = field(default_factory=list)

    def id_map_numpy(self) -> np.ndarray:
        """The id map on the host.  # (H, W) int32"""
        return self.id_map.cpu().numpy()


@runtime_checkable
class Segmenter(Protocol):
    """A panoptic model loaded once on a device.

    Attributes:
        spec: the model spec string it was built from.
        device: where the model and its results live.
        categories: the dataset categories its segments use.
        label_map: the model's label index -> dataset category id.

    A segmenter may also have ``batch_key(height, width)``: images with equal keys share a padded input size,
    and the worker batches them together (without it, images are batched by :func:`orientation`).
    ``segment`` gives each image the result it gives that image alone, whatever else is in the batch.
    """

    spec: str
    device: torch.device
    categories: Categories
    label_map: LabelMap

    def segment(
        self, images: Sequence[np.ndarray | torch.Tensor], timings: dict[str, float] | None = None
    ) -> list[PanopticResult]:
        """Segments a batch of RGB uint8 images ``(H, W, 3)`` of mixed sizes; one result per image, in order.

        With ``timings``, seconds spent in ``preprocess``, ``forward`` and ``postprocess`` are added to it.
        """
        ...

    def describe(self) -> dict:
        """What the manifest records: spec, resolved source, label map, thresholds, dtype."""
        ...


def orientation(height: int, width: int) -> str:
    """The batching key of a segmenter without ``batch_key``: images of one orientation pad each other least."""
    return "landscape" if width > height else "portrait" if height > width else "square"


class StageClock:
    """Adds the seconds of consecutive stages to a dict, synchronising the device at each lap; off when None."""

    def __init__(self, device: torch.device, timings: dict[str, float] | None):
        self.device = device
        self.timings = timings
        self.started = time.perf_counter()

    def lap(self, stage: str) -> None:
        """Charges the time since the previous lap to ``stage``."""
        if self.timings is None:
            return
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.timings[stage] = self.timings.get(stage, 0.0) + now - self.started
        self.started = now


def select_device(device: str | torch.device | None = None) -> torch.device:
    """``cuda`` when present, else ``cpu``; an explicit device is checked.

    Raises:
        ValueError: the device string is not one torch knows, or CUDA was asked for and is absent.
    """
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as error:
        raise ValueError(f"Expected `device` to be 'cpu', 'cuda' or 'cuda:N', but got {device!r}") from error
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Expected a CUDA device to be present for `device`={device!r}, but torch sees none")
    return resolved


def resolve_dtype(dtype: str) -> torch.dtype:
    """Maps a ``--dtype`` value to a torch dtype.

    Raises:
        ValueError: not one of float32, bfloat16, float16.
    """
    if dtype not in DTYPES:
        raise ValueError(f"Expected `dtype` to be one of {sorted(DTYPES)}, but got {dtype!r}")
    return DTYPES[dtype]


def autocast(device: torch.device, dtype: torch.dtype):
    """Autocast context for the model's forward pass; a no-op for float32."""
    if dtype == torch.float32:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


def images_to_device(images: Sequence[np.ndarray | torch.Tensor], device: torch.device) -> list[torch.Tensor]:
    """Checks a batch of RGB uint8 images and moves each to ``device`` as ``(3, H, W)`` uint8.

    Raises:
        ValueError: an image is not uint8 ``(H, W, 3)`` with H, W > 0; the message gives its batch position.
    """
    moved = []
    for position, image in enumerate(images):
        tensor = _from_numpy(image) if isinstance(image, np.ndarray) else image
        if tensor.dtype != torch.uint8 or tensor.ndim != 3 or tensor.shape[2] != 3 or 0 in tensor.shape:
            raise ValueError(
                f"Expected image {position} of the batch to be RGB uint8 (H, W, 3), but got "
                f"{tuple(tensor.shape)} {tensor.dtype}"
            )
        if device.type == "cuda" and tensor.device.type == "cpu":
            tensor = tensor.pin_memory()
        moved.append(tensor.to(device, non_blocking=True).permute(2, 0, 1))
    return moved


def _from_numpy(image: np.ndarray) -> torch.Tensor:
    """A tensor over the array's memory; read-only arrays (decoded images) too: nothing here writes into it (the
    pre-processing makes new tensors, and a copy to the GPU goes through pinned memory first)."""
    image = np.ascontiguousarray(image)
    if image.flags.writeable:
        return torch.from_numpy(image)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        return torch.from_numpy(image)


def segment_boxes(id_map: torch.Tensor, n_ids: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Areas and bounding boxes of ids ``0..n_ids-1`` of an id map, computed on its device.

    Args:
        id_map: values in ``[0, n_ids)``.  # (H, W) integer
        n_ids: number of ids to report.

    Returns:
        ``(areas, boxes)``: ``areas`` # (n_ids,) int64; ``boxes`` # (n_ids, 4) int64 COCO ``[x, y, w, h]``
        with ``w = x_max - x_min + 1``; zero where an id is absent.
    """
    height, width = id_map.shape
    ids = id_map.long()
    device = id_map.device
    areas = torch.bincount(ids.reshape(-1), minlength=n_ids)[:n_ids]
    # Which rows and columns each id touches, from two bincounts (faster than per-id min/max reductions).
    rows = torch.bincount((ids * height + torch.arange(height, device=device)[:, None]).reshape(-1),
                          minlength=n_ids * height)[: n_ids * height].view(n_ids, height) > 0
    cols = torch.bincount((ids * width + torch.arange(width, device=device)[None, :]).reshape(-1),
                          minlength=n_ids * width)[: n_ids * width].view(n_ids, width) > 0
    y0 = rows.to(torch.uint8).argmax(1)
    y1 = height - 1 - rows.flip(1).to(torch.uint8).argmax(1)
    x0 = cols.to(torch.uint8).argmax(1)
    x1 = width - 1 - cols.flip(1).to(torch.uint8).argmax(1)
    boxes = torch.stack([x0, y0, x1 - x0 + 1, y1 - y0 + 1], dim=1)
    return areas, torch.where((areas > 0)[:, None], boxes, torch.zeros_like(boxes))


@dataclass
class SegmentTable:
    """Per-image segment attributes still on the device, indexed by segment id (row 0 = VOID, unused).

    Attributes:
        category_ids: dataset category id per segment id.  # (S + 1,) int64
        isthing: thing flag per segment id.  # (S + 1,) bool
        scores: score per segment id.  # (S + 1,) float32
    """

    category_ids: torch.Tensor
    isthing: torch.Tensor
    scores: torch.Tensor


def finish_batch(id_maps: Sequence[torch.Tensor], tables: Sequence[SegmentTable]) -> list[PanopticResult]:
    """Computes areas and boxes on the device, copies every segment table to the host in one transfer.

    Ids with no pixel in their map are left out, so every listed segment is present and vice versa.
    """
    columns = []
    for id_map, table in zip(id_maps, tables):
        n_ids = table.category_ids.shape[0]
        areas, boxes = segment_boxes(id_map, n_ids)
        columns.append(
            torch.cat(
                [
                    table.category_ids[:, None].long(),
                    table.isthing[:, None].long(),
                    areas[:, None],
                    boxes,
                    table.scores[:, None].float().view(torch.int32).long(),  # bit-exact through the int64 stack
                ],
                dim=1,
            )
        )
    host = torch.cat(columns).cpu().numpy() if columns else np.zeros((0, 8), dtype=np.int64)
    results, start = [], 0
    for id_map, column in zip(id_maps, columns):
        rows = host[start : start + column.shape[0]]
        start += column.shape[0]
        results.append(PanopticResult(id_map, _segments_from_rows(rows)))
    return results


def id_maps_to_host(results: Sequence[PanopticResult]) -> list[np.ndarray]:
    """The batch's id maps on the host, in order: views of CPU tensors, or one packed copy from a device.

    From a device, every map is cast to the narrowest integer type that holds the batch's largest segment id
    (uint8 up to 255, which covers a 200-query model; int16, else int32), the maps are joined into one tensor and
    copied once into pinned memory, with one synchronisation; the arrays are views of that copy. Callers cast
    them (``astype(np.uint32)``) as they need.

    Returns:
        one array per result.  # (H, W) uint8, int16 or int32
    """
    if not results:
        return []
    if all(result.id_map.device.type == "cpu" for result in results):
        return [result.id_map.numpy() for result in results]
    largest = max((segment["id"] for result in results for segment in result.segments), default=0)
    return pack_to_host([result.id_map for result in results], largest)


def pack_to_host(id_maps: Sequence[torch.Tensor], largest_id: int) -> list[np.ndarray]:
    """Joins id maps (values in ``0..largest_id``) into one tensor of the narrowest fitting type, copies it to the
    host once (pinned and asynchronous from a CUDA device, with each map's smallest and largest id, then one
    synchronisation), and returns a view per map.

    Returns:
        one array per map, its shape kept.  # (H, W) uint8, int16 or int32

    Raises:
        ValueError: a map holds an id outside ``0..largest_id`` (a segmenter listing fewer segments than its map
            holds), which the narrow type would have wrapped.
    """
    dtype = torch.uint8 if largest_id < 2**8 else torch.int16 if largest_id < 2**15 else torch.int32
    device = id_maps[0].device
    pinned = device.type == "cuda"
    joined = torch.cat([id_map.reshape(-1).to(dtype) for id_map in id_maps])
    extremes = torch.stack([torch.stack([id_map.min(), id_map.max()]) for id_map in id_maps]).to(torch.int64)
    host = torch.empty(joined.shape, dtype=dtype, pin_memory=pinned)
    host_extremes = torch.empty(extremes.shape, dtype=torch.int64, pin_memory=pinned)
    host.copy_(joined, non_blocking=pinned)
    host_extremes.copy_(extremes, non_blocking=pinned)
    if pinned:
        torch.cuda.current_stream(device).synchronize()
    for position, (low, high) in enumerate(host_extremes.tolist()):
        if low < 0 or high > largest_id:
            raise ValueError(f"Expected the ids of id map {position} of the batch to be in [0, {largest_id}] (its "
                             f"segments' largest id), but they span [{low}, {high}]")
    flat = host.numpy()
    arrays, start = [], 0
    for id_map in id_maps:
        height, width = id_map.shape
        arrays.append(flat[start : start + height * width].reshape(height, width))
        start += height * width
    return arrays


def _segments_from_rows(rows: np.ndarray) -> list[dict]:
    """Segment dicts from host rows ``[category_id, isthing, area, x, y, w, h, score bits]`` (row = id)."""
    scores = rows[:, 7].astype(np.int32).view(np.float32)
    return [
        {
            "id": segment_id,
            "category_id": int(row[0]),
            "isthing": bool(row[1]),
            "score": round(float(scores[segment_id]), 6),
            "area": int(row[2]),
            "bbox": [int(v) for v in row[3:7]],
        }
        for segment_id, row in enumerate(rows)
        if segment_id > 0 and row[2] > 0
    ]


def category_lookup(label_map: LabelMap, categories: Categories, device: torch.device) -> tuple[torch.Tensor, ...]:
    """Device tables indexed by model label: dataset category id (-1 if none), isthing, and "has a category".

    Returns:
        ``(category_ids, isthing, known)``: # (L,) int64, (L,) bool, (L,) bool
    """
    ids = [(-1 if c is None else c) for c in label_map.category_ids]
    things = [bool(c is not None and categories.by_id(c).isthing) for c in label_map.category_ids]
    category_ids = torch.tensor(ids, dtype=torch.int64, device=device)
    return category_ids, torch.tensor(things, dtype=torch.bool, device=device), category_ids >= 0
