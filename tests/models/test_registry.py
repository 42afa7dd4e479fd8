"""Model specs: validation before anything loads, presets, defaults."""

from __future__ import annotations

import pytest

from segcore.models.registry import (
    DEFAULT_PRESET,
    PRESETS,
    ModelOptions,
    check_spec,
    default_spec,
    describe_specs,
    hub_reachable,
    resolve_options,
    split_spec,
)


@pytest.mark.parametrize("spec", ["", "hf", "hf:", "onnx:model.onnx", "Demo", "demo:x", "eomt-large"])
def test_a_bad_spec_fails_listing_the_known_backends_and_presets(spec):
    with pytest.raises(ValueError) as error:
        check_spec(spec)
    message = str(error.value)
    assert repr(spec) in message and "hf:" in message and "torchvision:" in message and DEFAULT_PRESET in message


def test_specs_split_into_backend_and_target():
    assert split_spec("demo") == ("demo", "")
    assert split_spec("hf:s3://models/run7/") == ("hf", "s3://models/run7/")
    assert split_spec("detr-r101") == ("hf", "facebook/detr-resnet-101-panoptic")
    assert split_spec(DEFAULT_PRESET) == ("hf", "tue-mps/coco_panoptic_eomt_large_640")


def test_a_preset_sets_its_options_unless_the_user_set_them():
    assert resolve_options("mask2former-swin-large", ModelOptions()).input_size == (800, 1333)
    assert resolve_options("mask2former-swin-large", ModelOptions(input_size=(640, 2560))).input_size == (640, 2560)
    assert resolve_options("eomt-large-640-ade20k", ModelOptions()).dataset == "ade20k-panoptic"
    assert resolve_options("hf:x/y", ModelOptions()).dataset is None


def test_detr_keeps_queries_above_0_85_by_its_own_rule_unless_the_user_says_otherwise(tiny_model_dirs):
    from segcore.models.registry import load_segmenter
    from segcore.synthetic import demo_categories

    detr = load_segmenter(f"hf:{tiny_model_dirs['detr']}", ModelOptions(device="cpu"), demo_categories())
    assert detr.thresholds.score == 0.85 and detr.rule.postprocess == "detr"
    mask2former = load_segmenter(f"hf:{tiny_model_dirs['mask2former']}", ModelOptions(device="cpu"), demo_categories())
    assert mask2former.thresholds.score == 0.8
    lowered = load_segmenter(f"hf:{tiny_model_dirs['detr']}", ModelOptions(device="cpu", score_threshold=0.5),
                             demo_categories())
    assert lowered.thresholds.score == 0.5


@pytest.mark.parametrize(
    "options, field",
    [(ModelOptions(dtype="fp16"), "dtype"), (ModelOptions(score_threshold=1.5), "score_threshold"),
     (ModelOptions(overlap_threshold=-0.1), "overlap_threshold")],
)
def test_bad_options_fail_before_loading(options, field):
    with pytest.raises(ValueError, match=field):
        check_spec("demo", options)


@pytest.mark.parametrize("options, field", [
    (ModelOptions(dataset="imagenet"), "ade20k-panoptic"), (ModelOptions(input_size=(1333, 800)), "input_size"),
    (ModelOptions(input_size=(800,)), "input_size"),
])
def test_a_bad_dataset_or_input_size_fails_listing_what_is_allowed(options, field):
    with pytest.raises(ValueError, match=field):
        check_spec("hf:x/y", options)


def test_the_dtype_error_lists_the_allowed_values():
    with pytest.raises(ValueError, match="bfloat16.*float16.*float32"):
        check_spec("demo", ModelOptions(dtype="half"))


def test_every_preset_is_a_valid_spec_and_described():
    text = describe_specs()
    for name, preset in PRESETS.items():
        check_spec(name)
        assert name in text and split_spec(preset.spec)[0] == "hf"


def test_offline_default_is_the_demo_model(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert not hub_reachable()
    assert default_spec() == "demo"
    assert default_spec(reachable=True) == DEFAULT_PRESET
