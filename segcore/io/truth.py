"""Ground truth of a COCO panoptic dataset for the labeling job: the ``--gt`` JSON and its PNG folder.

The driver reads the JSON once; each shard gets the annotations of its images (looked up by the sample key, the
image's file name without extension), and the actor reads the ground-truth PNGs itself. An image's rank is its
annotation's position in the JSON, the order the reference sums IoUs in, so a job's PQ equals the standalone
evaluation of the same predictions bit for bit.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from typing import Any, Mapping

from segcore.categories import Categories, categories_from_json
from segcore.io import storage


@dataclass(frozen=True)
class TruthRef:
    """One image's ground truth: where its PNG is and its annotation.

    Attributes:
        rank: the annotation's position in the ground-truth JSON.
        image_id: the COCO image id.
        png_uri: the ground-truth PNG.
        segments_info: the annotation's segments.
        size: ``(height, width)`` from the JSON's images list, when it has one.
    """

    rank: int
    image_id: Any
    png_uri: str
    segments_info: tuple
    size: tuple[int, int] | None = None


@dataclass(frozen=True)
class GroundTruth:
    """A COCO panoptic ground truth, indexed by image key (file name without extension)."""

    uri: str
    folder: str
    categories: Categories
    by_key: Mapping[str, TruthRef]

    def lookup(self, key: str) -> TruthRef | None:
        """The ground truth of a sample key: the key itself, else its base name (images in sub-folders)."""
        found = self.by_key.get(key)
        return found if found is not None else self.by_key.get(posixpath.basename(key))

    def for_keys(self, keys) -> dict[str, TruthRef]:
        """The ground truth of the keys that have one."""
        found = {key: self.lookup(key) for key in keys}
        return {key: truth for key, truth in found.items() if truth is not None}


def check_unique_image_ids(document: Mapping, where: str) -> None:
    """Refuses a COCO panoptic JSON listing one image id twice (in ``images`` or in ``annotations``): its images
    would be scored twice, or against the wrong annotation.

    Raises:
        ValueError: the message names the id and the file.
    """
    for section in ("images", "annotations"):
        field = "id" if section == "images" else "image_id"
        seen: set = set()
        for entry in document.get(section) or ():
            image_id = entry.get(field) if isinstance(entry, Mapping) else None
            if image_id is not None and image_id in seen:
                raise ValueError(f"Expected each image once in the {section} of {where}, but image id {image_id!r} "
                                 "is there twice")
            seen.add(image_id)


def default_folder(gt_json: str) -> str:
    """The PNG folder beside the JSON, named like it without ``.json`` (panopticapi's convention)."""
    return gt_json[: -len(".json")] if gt_json.endswith(".json") else gt_json


def load_ground_truth(gt_json: str, gt_dir: str | None = None, storage_options: Mapping | None = None) -> GroundTruth:
    """Reads a COCO panoptic ground-truth JSON and indexes its annotations by image key.

    Raises:
        ValueError: not a COCO panoptic JSON (no categories or annotations), two annotations for one image, or
            one image id twice; the message names the file.
        FileNotFoundError: the JSON does not exist.
    """
    document = storage.read_json(gt_json, storage_options)
    if not isinstance(document, dict) or "annotations" not in document or "categories" not in document:
        raise ValueError(f"Expected a COCO panoptic JSON with 'annotations' and 'categories' at {gt_json}")
    check_unique_image_ids(document, gt_json)
    categories = categories_from_json(document)
    folder = storage.Folder(gt_dir or default_folder(gt_json), storage_options)
    images = {image["id"]: image for image in document.get("images", ()) if "id" in image}
    by_key: dict[str, TruthRef] = {}
    for rank, annotation in enumerate(document["annotations"]):
        image_id = annotation.get("image_id")
        image = images.get(image_id, {})
        name = image.get("file_name") or annotation.get("file_name")
        if name is None or "file_name" not in annotation or "segments_info" not in annotation:
            raise ValueError(f"Expected annotation {rank} of {gt_json} to have image_id, file_name and segments_info")
        key = posixpath.splitext(name)[0]
        if key in by_key:
            raise ValueError(f"Expected one annotation per image in {gt_json}, but {name!r} has two")
        size = (image["height"], image["width"]) if "height" in image and "width" in image else None
        by_key[key] = TruthRef(rank, image_id, folder.uri_of(annotation["file_name"]),
                               tuple(annotation["segments_info"]), size)
    return GroundTruth(gt_json, folder.uri_of("").rstrip("/"), categories, by_key)
