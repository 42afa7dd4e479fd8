"""Dataset categories: the COCO panoptic list, other COCO-panoptic category lists, and model label maps."""

from __future__ import annotations

import json
from dataclasses import dataclass
from importlib import resources
from typing import Iterable, Mapping, Sequence


@dataclass(frozen=True)
class Category:
    """One dataset category as COCO panoptic describes it.

    Attributes:
        id: the dataset's category id (COCO: sparse, 1..200), never a model's label index.
        name: human-readable name, e.g. ``"person"``.
        isthing: True for countable things (instances), False for stuff.
        color: display colour ``(r, g, b)``.
        supercategory: the coarser group, e.g. ``"vehicle"``.
    """

    id: int
    name: str
    isthing: bool
    color: tuple[int, int, int] = (0, 0, 0)
    supercategory: str = ""

    @classmethod
    def from_coco(cls, record: Mapping) -> "Category":
        """Builds a category from a COCO-panoptic ``categories`` entry.

        Raises:
            ValueError: the record lacks ``id``, ``name`` or ``isthing``, or has a malformed colour.
        """
        if not isinstance(record, Mapping) or any(key not in record for key in ("id", "name", "isthing")):
            raise ValueError(f"Expected a category record with id, name and isthing, but got {record!r}")
        raw_color = record.get("color", (0, 0, 0))
        try:
            color = () if isinstance(raw_color, (str, bytes)) else tuple(int(c) for c in raw_color)
        except (TypeError, ValueError):
            color = ()
        if len(color) != 3:
            raise ValueError(f"Expected category {record['id']} to have an (r, g, b) colour, but got {raw_color!r}")
        return cls(
            id=int(record["id"]),
            name=str(record["name"]),
            isthing=bool(record["isthing"]),
            color=color,  # type: ignore[arg-type]
            supercategory=str(record.get("supercategory", "")),
        )

    def to_coco(self) -> dict:
        """Returns the COCO-panoptic ``categories`` entry for this category."""
        return {
            "id": self.id,
            "name": self.name,
            "supercategory": self.supercategory,
            "isthing": int(self.isthing),
            "color": list(self.color),
        }


class Categories(Sequence[Category]):
    """An ordered, id-indexed list of dataset categories.

    The order is the dataset's (for COCO panoptic, the gt JSON's), which is the order PQ averages over.
    """

    def __init__(self, categories: Iterable[Category]):
        self._items = tuple(categories)
        self._by_id = {c.id: c for c in self._items}
        if len(self._by_id) != len(self._items):
            seen: set[int] = set()
            dup = next(c.id for c in self._items if c.id in seen or seen.add(c.id))
            raise ValueError(f"Expected unique category ids, but id {dup} appears more than once")

    def __getitem__(self, index):  # type: ignore[override]
        return self._items[index]

    def __len__(self) -> int:
        return len(self._items)

    def __contains__(self, category_id: object) -> bool:
        return category_id in self._by_id

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Categories) and self._items == other._items

    def __repr__(self) -> str:
        return f"Categories({len(self)} categories, {sum(c.isthing for c in self)} things)"

    def by_id(self, category_id: int) -> Category:
        """Returns the category with this dataset id.

        Raises:
            KeyError: no category has this id.
        """
        try:
            return self._by_id[category_id]
        except KeyError:
            raise KeyError(f"Unknown category id {category_id}; known ids: {sorted(self._by_id)}") from None

    @property
    def ids(self) -> list[int]:
        """Category ids in dataset order."""
        return [c.id for c in self._items]

    def to_coco(self) -> list[dict]:
        """Returns the COCO-panoptic ``categories`` list."""
        return [c.to_coco() for c in self._items]

    @classmethod
    def from_coco(cls, records: Iterable[Mapping]) -> "Categories":
        """Builds categories from a COCO-panoptic ``categories`` list."""
        return cls(Category.from_coco(r) for r in records)


def coco_panoptic_categories() -> Categories:
    """Returns the 133 COCO panoptic categories (80 things, 53 stuff) shipped with the package."""
    return _packaged("coco_panoptic_categories.json")


def _packaged(name: str) -> Categories:
    text = resources.files("segcore").joinpath(f"data/{name}").read_text()
    return Categories.from_coco(json.loads(text))


# dataset name -> its COCO-panoptic categories, in the order of the models' contiguous labels:
# COCO panoptic (panopticapi's panoptic_coco_categories.json), ADE20K panoptic (Mask2Former's
# prepare_ade20k_pan_seg.py: ids 0..149 in SceneParse150 order, 100 things), Cityscapes panoptic
# (cityscapesScripts' createPanopticImgs.py: label ids, listed in train-id order, 8 things)
DATASETS = {
    "coco-panoptic": "coco_panoptic_categories.json",
    "ade20k-panoptic": "ade20k_panoptic_categories.json",
    "cityscapes-panoptic": "cityscapes_panoptic_categories.json",
}


def dataset_categories(dataset: str) -> Categories:
    """The categories of a dataset models are trained on (see :data:`DATASETS`).

    Raises:
        ValueError: an unknown dataset; the known ones are listed.
    """
    if dataset not in DATASETS:
        raise ValueError(f"Expected `dataset` to be one of {sorted(DATASETS)}, but got {dataset!r}")
    return _packaged(DATASETS[dataset])


def label_map_of_dataset(
    dataset: str, names: Sequence[str], categories: Categories | None = None, by_id: bool = False
) -> LabelMap:
    """The label map of a model trained on ``dataset``, by label index.

    Mask2Former, OneFormer, MaskFormer and EoMT have one label per category in the dataset's order (label i is the
    i-th category); DETR's labels are the category ids themselves (``by_id``: its 250 labels, label i is
    category i, unused ids map to nothing).

    Args:
        dataset: a name in :data:`DATASETS`.
        names: the model's label names, in label order (for messages and the manifest).
        categories: the job's categories (a ground truth's), which must hold every mapped id; default the
            dataset's own.
        by_id: labels are category ids (DETR).

    Raises:
        ValueError: an unknown dataset, a label count that does not fit, or ids the job's categories lack.
    """
    known = dataset_categories(dataset)
    if by_id and len(names) > max(known.ids):
        mapped: list[int | None] = [i if i in known else None for i in range(len(names))]
    elif not by_id and len(names) == len(known):
        mapped = [c.id for c in known]
    else:
        expected = f"more than {max(known.ids)} labels (labels = category ids)" if by_id else \
            f"{len(known)} labels (one per category)"
        raise ValueError(f"Expected a model trained on {dataset} to have {expected}, but it has {len(names)}")
    missing = sorted({c for c in mapped if c is not None} - set((categories or known).ids))
    if missing:
        raise ValueError(f"Expected the job's categories to hold the {dataset} category ids the model predicts, "
                         f"but {missing} are missing")
    return LabelMap(tuple(mapped), tuple(names))


def categories_from_json(document: Mapping | Sequence) -> Categories:
    """Reads categories from a parsed COCO-panoptic JSON: a full dataset dict or a bare category list.

    Raises:
        ValueError: the document holds no ``categories`` list.
    """
    if isinstance(document, Mapping):
        if "categories" not in document:
            raise ValueError("Expected a COCO panoptic JSON with a 'categories' list, but it has none")
        document = document["categories"]
    return Categories.from_coco(document)


@dataclass(frozen=True)
class LabelMap:
    """Maps a model's contiguous label indices (0..K-1) to dataset category ids.

    Attributes:
        category_ids: ``category_ids[label]`` is the dataset category id of model label ``label``,
            or None where the label has no dataset category (such labels cannot be emitted).
        names: the model's label names, for messages.
    """

    category_ids: tuple[int | None, ...]
    names: tuple[str, ...] = ()

    def category_id(self, label: int) -> int:
        """Returns the dataset category id of a model label.

        Raises:
            KeyError: the label is out of range or maps to no dataset category.
        """
        if not 0 <= label < len(self.category_ids):
            raise KeyError(f"Expected a model label in 0..{len(self.category_ids) - 1}, but got {label}")
        category_id = self.category_ids[label]
        if category_id is None:
            name = self.names[label] if label < len(self.names) else "?"
            raise KeyError(f"Model label {label} ({name!r}) maps to no dataset category")
        return category_id

    def to_json(self) -> dict:
        """Returns a JSON-ready form, as stored in the job manifest."""
        return {"category_ids": list(self.category_ids), "names": list(self.names)}

    @classmethod
    def from_json(cls, document: Mapping) -> "LabelMap":
        """Inverse of :meth:`to_json`."""
        return cls(tuple(document["category_ids"]), tuple(document.get("names", ())))


def label_map_by_name(
    model_labels: Sequence[str],
    categories: Categories,
    aliases: Mapping[str, str] | None = None,
    allow_unmapped: Iterable[str] = (),
) -> LabelMap:
    """Maps model label names to dataset categories by name.

    Args:
        model_labels: the model's label names, index = model label (e.g. a config's id2label in order).
        categories: the dataset categories to map onto.
        aliases: model name -> dataset name, for names that differ.
        allow_unmapped: model names that may map to nothing (e.g. ``"N/A"``); they become None.

    Raises:
        ValueError: some model labels match no dataset category; the message lists them and the known names.
    """
    aliases = dict(aliases or {})
    allowed = set(allow_unmapped)
    by_name = {c.name: c.id for c in categories}
    mapped: list[int | None] = []
    unmapped: list[str] = []
    for index, name in enumerate(model_labels):
        category_id = by_name.get(aliases.get(name, name))
        if category_id is None and name not in allowed:
            unmapped.append(f"{index}:{name!r}")
        mapped.append(category_id)
    if unmapped:
        raise ValueError(
            f"Expected every model label to name a dataset category, but {', '.join(unmapped)} match none; "
            f"known names: {sorted(by_name)}"
        )
    return LabelMap(tuple(mapped), tuple(model_labels))
