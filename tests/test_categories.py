"""Tests for segcore.categories: the shipped COCO panoptic list, category JSON readers and model label maps."""

import json
import re
from pathlib import Path

import pytest

from segcore.categories import (
    Categories,
    Category,
    LabelMap,
    categories_from_json,
    coco_panoptic_categories,
    label_map_by_name,
)

SAMPLE = Path(__file__).parent / "data" / "coco_panoptic_sample"


def read_sample(name: str):
    """Returns the parsed JSON file ``name`` of the real COCO panoptic sample (from cocodataset/panopticapi)."""
    return json.loads((SAMPLE / name).read_text())


def small_categories() -> Categories:
    """Returns three categories with sparse ids: two things and one stuff."""
    return Categories(
        [
            Category(1, "person", True, (220, 20, 60), "person"),
            Category(3, "car", True, (0, 0, 142), "vehicle"),
            Category(187, "sky-other-merged", False, (70, 130, 180), "sky"),
        ]
    )


# --- the shipped COCO panoptic list -----------------------------------------------------------------------------


def test_shipped_list_has_133_categories_80_things_53_stuff():
    categories = coco_panoptic_categories()
    assert len(categories) == 133
    assert sum(c.isthing for c in categories) == 80
    assert sum(not c.isthing for c in categories) == 53
    assert repr(categories) == "Categories(133 categories, 80 things)"


def test_shipped_ids_are_sparse_unique_and_within_1_to_200():
    ids = coco_panoptic_categories().ids
    assert len(set(ids)) == 133
    assert ids == sorted(ids)
    assert (min(ids), max(ids)) == (1, 200)
    assert 12 not in ids and 183 not in ids  # COCO's well-known gaps (no "street sign"; "other" was dropped)


def test_shipped_list_puts_the_80_things_first():
    assert [c.isthing for c in coco_panoptic_categories()] == [True] * 80 + [False] * 53


def test_shipped_list_equals_panopticapis_categories_json():
    records = read_sample("panoptic_coco_categories.json")
    categories = coco_panoptic_categories()
    assert categories == Categories.from_coco(records)
    assert categories.to_coco() == records


def test_shipped_list_known_entries():
    categories = coco_panoptic_categories()
    assert categories.by_id(1) == Category(1, "person", True, (220, 20, 60), "person")
    assert categories[79].name == "toothbrush" and categories[79].id == 90
    assert categories.by_id(200).name == "rug-merged" and not categories.by_id(200).isthing


def test_shipped_list_is_the_same_each_call():
    assert coco_panoptic_categories() == coco_panoptic_categories()


# --- Categories and Category ------------------------------------------------------------------------------------


def test_sequence_protocol_and_lookup():
    categories = small_categories()
    assert len(categories) == 3
    assert [c.name for c in categories] == ["person", "car", "sky-other-merged"]
    assert categories[-1].id == 187
    assert categories.ids == [1, 3, 187]
    assert 3 in categories and 2 not in categories  # membership is by category id
    assert categories.by_id(187).name == "sky-other-merged"


def test_unknown_id_raises_key_error_listing_known_ids():
    with pytest.raises(KeyError, match=re.escape("Unknown category id 2; known ids: [1, 3, 187]")):
        small_categories().by_id(2)


def test_duplicate_ids_raise():
    duplicated = [Category(1, "person", True), Category(3, "car", True), Category(1, "rider", True)]
    with pytest.raises(ValueError, match="Expected unique category ids, but id 1 appears more than once"):
        Categories(duplicated)


def test_duplicate_ids_in_json_raise():
    records = read_sample("panoptic_coco_categories.json")
    with pytest.raises(ValueError, match="but id 1 appears more than once"):
        categories_from_json(records + [dict(records[0], name="another person")])


def test_equality_depends_on_order():
    categories = small_categories()
    assert categories == Categories(list(categories))
    assert categories != Categories(list(categories)[::-1])
    assert categories != list(categories)


def test_category_from_coco_reads_isthing_as_bool_and_defaults():
    category = Category.from_coco({"id": "7", "name": "train", "isthing": 1})
    assert category == Category(7, "train", True, (0, 0, 0), "")
    assert Category.from_coco({"id": 200, "name": "rug-merged", "isthing": 0}).isthing is False


@pytest.mark.parametrize(
    "record, message",
    [
        ({"id": 1, "name": "person"}, "Expected a category record with id, name and isthing"),
        ({"name": "person", "isthing": 1}, "Expected a category record with id, name and isthing"),
        ("person", "Expected a category record with id, name and isthing, but got 'person'"),
        ({"id": 1, "name": "a", "isthing": 1, "color": [1, 2]}, "Expected category 1 to have an (r, g, b) colour"),
        ({"id": 1, "name": "a", "isthing": 1, "color": "red"}, "but got 'red'"),
        ({"id": 1, "name": "a", "isthing": 1, "color": "123"}, "but got '123'"),
        ({"id": 1, "name": "a", "isthing": 1, "color": 5}, "but got 5"),
    ],
)
def test_malformed_category_records_raise(record, message):
    with pytest.raises(ValueError, match=re.escape(message)):
        Category.from_coco(record)


# --- categories_from_json ---------------------------------------------------------------------------------------


def test_from_full_coco_panoptic_json():
    document = read_sample("panoptic_examples.json")
    assert set(document) >= {"images", "annotations", "categories"}
    assert categories_from_json(document) == coco_panoptic_categories()


def test_from_bare_category_list():
    assert categories_from_json(read_sample("panoptic_coco_categories.json")) == coco_panoptic_categories()


def test_from_json_without_categories_raises():
    document = {key: value for key, value in read_sample("panoptic_examples.json").items() if key != "categories"}
    with pytest.raises(ValueError, match="Expected a COCO panoptic JSON with a 'categories' list"):
        categories_from_json(document)


def test_from_json_of_wrong_shape_raises():
    with pytest.raises(ValueError, match="Expected a category record"):
        categories_from_json("categories")


def test_empty_list_gives_no_categories():
    assert len(categories_from_json([])) == 0


def test_categories_json_round_trip():
    categories = coco_panoptic_categories()
    text = json.dumps(categories.to_coco())
    assert categories_from_json(json.loads(text)) == categories


def test_category_to_coco_round_trip():
    category = Category(187, "sky-other-merged", False, (70, 130, 180), "sky")
    record = category.to_coco()
    assert record == {
        "id": 187, "name": "sky-other-merged", "supercategory": "sky", "isthing": 0, "color": [70, 130, 180]
    }
    assert Category.from_coco(json.loads(json.dumps(record))) == category


# --- LabelMap ---------------------------------------------------------------------------------------------------


def test_label_map_by_name_maps_indices_to_dataset_ids():
    label_map = label_map_by_name(["sky-other-merged", "person", "car"], small_categories())
    assert label_map == LabelMap((187, 1, 3), ("sky-other-merged", "person", "car"))
    assert [label_map.category_id(label) for label in range(3)] == [187, 1, 3]


def test_label_map_by_name_on_the_shipped_list():
    categories = coco_panoptic_categories()
    label_map = label_map_by_name([c.name for c in categories], categories)
    assert list(label_map.category_ids) == categories.ids


def test_label_map_aliases():
    aliases = {"human": "person", "sky": "sky-other-merged"}
    label_map = label_map_by_name(["human", "car", "sky"], small_categories(), aliases=aliases)
    assert label_map.category_ids == (1, 3, 187)
    assert label_map.names == ("human", "car", "sky")  # the model's names are kept, not the dataset's


def test_allowed_unmapped_labels_become_none_and_raise_when_used():
    label_map = label_map_by_name(["N/A", "person", "N/A"], small_categories(), allow_unmapped=["N/A"])
    assert label_map.category_ids == (None, 1, None)
    assert label_map.category_id(1) == 1
    with pytest.raises(KeyError, match=re.escape("Model label 2 ('N/A') maps to no dataset category")):
        label_map.category_id(2)


def test_allowed_unmapped_name_that_matches_still_maps():
    label_map = label_map_by_name(["person"], small_categories(), allow_unmapped=["person"])
    assert label_map.category_ids == (1,)


def test_unknown_names_raise_listing_them_and_the_known_names():
    with pytest.raises(ValueError) as error:
        label_map_by_name(["person", "dog", "car", "cat"], small_categories())
    message = str(error.value)
    assert "1:'dog', 3:'cat' match none" in message
    assert "known names: ['car', 'person', 'sky-other-merged']" in message


def test_alias_to_an_unknown_dataset_name_raises():
    with pytest.raises(ValueError, match="0:'human' match none"):
        label_map_by_name(["human"], small_categories(), aliases={"human": "pedestrian"})


@pytest.mark.parametrize("label", [-1, 3, 100])
def test_out_of_range_label_raises_key_error(label):
    label_map = LabelMap((187, 1, 3), ("sky", "person", "car"))
    with pytest.raises(KeyError, match=re.escape(f"Expected a model label in 0..2, but got {label}")):
        label_map.category_id(label)


def test_unmapped_label_without_names_raises_with_a_placeholder():
    with pytest.raises(KeyError, match=re.escape("Model label 0 ('?') maps to no dataset category")):
        LabelMap((None,)).category_id(0)


def test_label_map_json_round_trip():
    label_map = label_map_by_name(
        ["N/A", "person", "sky"], small_categories(), aliases={"sky": "sky-other-merged"}, allow_unmapped=["N/A"]
    )
    document = json.loads(json.dumps(label_map.to_json()))
    assert document == {"category_ids": [None, 1, 187], "names": ["N/A", "person", "sky"]}
    assert LabelMap.from_json(document) == label_map


def test_label_map_from_json_without_names():
    assert LabelMap.from_json({"category_ids": [1, 3]}) == LabelMap((1, 3), ())


# ------------------------------------------------------------------------------------ datasets models train on


def test_dataset_label_maps_follow_each_training_convention():
    from segcore.categories import dataset_categories, label_map_of_dataset

    coco = label_map_of_dataset("coco-panoptic", [f"LABEL_{i}" for i in range(133)])
    assert coco.category_ids[:3] == (1, 2, 3) and coco.category_ids[-1] == 200  # label i = the i-th category
    detr = label_map_of_dataset("coco-panoptic", ["N/A"] * 250, by_id=True)  # DETR: label i = category id i
    assert detr.category_ids[1] == 1 and detr.category_ids[12] is None and detr.category_ids[200] == 200
    assert label_map_of_dataset("ade20k-panoptic", ["x"] * 150).category_ids == tuple(range(150))
    cityscapes = label_map_of_dataset("cityscapes-panoptic", ["x"] * 19).category_ids  # train ids -> label ids
    assert cityscapes[0] == 7 and cityscapes[11] == 24 and cityscapes[18] == 33
    assert [c.name for c in dataset_categories("cityscapes-panoptic")][11] == "person"


def test_dataset_label_maps_refuse_what_does_not_fit():
    from segcore.categories import Categories, dataset_categories, label_map_of_dataset

    with pytest.raises(ValueError, match="150 labels"):
        label_map_of_dataset("ade20k-panoptic", ["x"] * 19)
    with pytest.raises(ValueError, match="ade20k-panoptic"):
        label_map_of_dataset("imagenet", ["x"] * 19)
    partial = Categories(list(dataset_categories("ade20k-panoptic"))[:100])
    with pytest.raises(ValueError, match=r"\[100, 101"):
        label_map_of_dataset("ade20k-panoptic", ["x"] * 150, partial)


def test_the_shipped_datasets_have_their_published_sizes():
    from segcore.categories import dataset_categories

    for name, total, things in (("coco-panoptic", 133, 80), ("ade20k-panoptic", 150, 100),
                                ("cityscapes-panoptic", 19, 8)):
        categories = dataset_categories(name)
        assert (len(categories), sum(c.isthing for c in categories)) == (total, things)
