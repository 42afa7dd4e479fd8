"""Tiny random-weight configs of every transformers family the ``hf:`` backend serves, saved offline."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from segcore.synthetic import demo_categories

FAMILIES = ("detr", "maskformer", "mask2former", "oneformer", "eomt")
SMALL_PROCESSOR = {"do_resize": True, "size": {"shortest_edge": 64, "longest_edge": 96}, "do_normalize": True}


def _labels(names=None) -> dict:
    names = list(names) if names is not None else [c.name for c in demo_categories()]
    return {"id2label": dict(enumerate(names)), "label2id": {n: i for i, n in enumerate(names)}}


def _resnet():
    from transformers import ResNetConfig

    return ResNetConfig(
        embedding_size=16, hidden_sizes=[16, 32, 64, 128], depths=[1, 1, 1, 1], layer_type="basic",
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


def _swin():
    from transformers import SwinConfig

    return SwinConfig(
        embed_dim=16, depths=[1, 1, 1, 1], num_heads=[1, 1, 2, 2], window_size=4, image_size=64,
        out_features=["stage1", "stage2", "stage3", "stage4"],
    )


def build_tiny_model(family: str, labels=None) -> torch.nn.Module:
    """A real architecture of ``family`` with a tiny config and random weights (seeded).

    ``labels``: the label names, in label order; default the demo's five COCO classes.
    """
    import transformers as T

    label_config = _labels(labels)

    torch.manual_seed(0)
    detr_sizes = dict(encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10)
    if family == "detr":
        config = T.DetrConfig(
            use_timm_backbone=False, backbone_config=_resnet(), use_pretrained_backbone=False, d_model=64,
            encoder_attention_heads=8, decoder_attention_heads=8, **detr_sizes, **label_config,
        )
        return T.DetrForSegmentation(config)
    if family == "maskformer":
        decoder = dict(model_type="detr", d_model=32, encoder_attention_heads=2, decoder_attention_heads=2, **detr_sizes)
        config = T.MaskFormerConfig(
            backbone_config=_swin(), decoder_config=decoder, fpn_feature_size=32, mask_feature_size=32,
            num_queries=10, **label_config,
        )
        return T.MaskFormerForInstanceSegmentation(config)
    common = dict(encoder_feedforward_dim=64, dim_feedforward=64, num_attention_heads=2, encoder_layers=1,
                  decoder_layers=2, num_queries=10)
    if family == "mask2former":
        config = T.Mask2FormerConfig(
            backbone_config=_swin(), use_pretrained_backbone=False, hidden_dim=32, mask_feature_size=32,
            feature_size=32, **common, **label_config,
        )
        return T.Mask2FormerForUniversalSegmentation(config)
    if family == "oneformer":
        config = T.OneFormerConfig(
            backbone_config=_swin(), hidden_dim=32, mask_dim=32, conv_dim=32, text_encoder_width=32,
            text_encoder_num_layers=1, text_encoder_context_length=16, text_encoder_vocab_size=64, task_seq_len=16,
            max_seq_len=16, is_training=False, **common, **label_config,
        )
        return T.OneFormerForUniversalSegmentation(config)
    config = T.EomtConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128, image_size=64,
        patch_size=16, num_blocks=2, num_queries=10, **label_config,
    )
    return T.EomtForUniversalSegmentation(config)


def save_tokenizer(folder: Path) -> None:
    """A small word-level tokenizer (OneFormer needs one for its task prompt; CLIP's files cannot be downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, "the": 2, "task": 3, "is": 4, "panoptic": 5, "semantic": 6, "instance": 7}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)


def save_tiny_model(family: str, folder: Path, labels=None) -> Path:
    """Saves a tiny model with ``save_pretrained`` plus a small image-processor config (and tokenizer)."""
    build_tiny_model(family, labels).save_pretrained(folder)
    processor = dict(SMALL_PROCESSOR)
    if family == "eomt":
        processor.update(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)
    elif family != "detr":
        processor["size_divisor"] = 32
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    if family == "oneformer":
        save_tokenizer(folder)
    return folder
