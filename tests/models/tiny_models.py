"""Tiny random-weight configs of every transformers family the ``hf:`` backend serves, saved offline."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from segcore.synthetic import demo_categories

FAMILIES = ("detr", "maskformer", "mask2former", "oneformer", "eomt", "eomt_dinov3")
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
    if family == "eomt_dinov3":
        config = T.EomtDinov3Config(
            hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, image_size=64,
            patch_size=16, num_register_tokens=4, num_blocks=1, num_queries=10, **label_config,
        )
        return T.EomtDinov3ForUniversalSegmentation(config)
    config = T.EomtConfig(
        hidden_size=64, num_hidden_layers=4, num_attention_heads=2, intermediate_size=128, image_size=64,
        patch_size=16, num_blocks=2, num_queries=10, **label_config,
    )
    return T.EomtForUniversalSegmentation(config)


OUTPUT_NAMES = {"detr": ("logits", "pred_masks")}  # other families: class_queries_logits, masks_queries_logits


def make_decisive(model: torch.nn.Module, seed: int = 0, strength: float = 8.0) -> torch.nn.Module:
    """Adds a fixed forward hook that makes a tiny random model's outputs decisive: a random class preference per
    query (several queries are kept with confident classes, some say "no object") and a mask field per query that
    is high in the query's own cell of a random Voronoi partition of the mask grid, on top of the model's own
    image-dependent mask logits (per image scaled to std 2, so boundaries move with the image).

    Random weights collapse every query onto one class and one mask near the threshold, where no rule is tested.
    The hook is part of the forward pass, so a port and the package see identical model outputs.
    """
    class_name, mask_name = OUTPUT_NAMES.get(model.config.model_type, ("class_queries_logits", "masks_queries_logits"))
    generator = torch.Generator().manual_seed(seed)
    n_queries = model.config.num_queries
    class_offsets = torch.randn(n_queries, model.config.num_labels + 1, generator=generator) * strength
    centers = torch.rand(n_queries, 2, generator=generator)  # (y, x) in [0, 1]

    def cells(height: int, width: int) -> torch.Tensor:
        ys, xs = torch.linspace(0, 1, height), torch.linspace(0, 1, width)
        grid = torch.stack(torch.meshgrid(ys, xs, indexing="ij"), -1)  # (h, w, 2)
        distance = (grid[None] - centers[:, None, None]).norm(dim=-1)  # (Q, h, w)
        return strength * (1 - (distance - distance.min(0).values) / 0.1)

    def hook(module, args, output):
        logits = getattr(output, class_name)
        masks = getattr(output, mask_name)
        scale = 2.0 / masks.flatten(1).std(1).clamp(min=1e-6)[:, None, None, None]
        setattr(output, class_name, logits + class_offsets.to(logits))
        setattr(output, mask_name, masks * scale + cells(*masks.shape[-2:]).to(masks))
        return output

    model.register_forward_hook(hook)
    return model


def save_tokenizer(folder: Path) -> None:
    """A small word-level tokenizer (OneFormer needs one for its task prompt; CLIP's files cannot be downloaded)."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    # the pad token is not id 0, as in CLIP's tokenizer: OneFormer's task input must still be padded with zeros
    vocab = {"[UNK]": 0, "the": 1, "task": 2, "is": 3, "panoptic": 4, "semantic": 5, "instance": 6, "[PAD]": 7}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=backend, pad_token="[PAD]", unk_token="[UNK]").save_pretrained(folder)


def save_tiny_model(family: str, folder: Path, labels=None) -> Path:
    """Saves a tiny model with ``save_pretrained`` plus a small image-processor config (and tokenizer)."""
    build_tiny_model(family, labels).save_pretrained(folder)
    processor = dict(SMALL_PROCESSOR)
    if family in ("eomt", "eomt_dinov3"):
        processor.update(size={"shortest_edge": 64, "longest_edge": 64}, do_pad=True)
    elif family != "detr":
        processor["size_divisor"] = 32
    (folder / "preprocessor_config.json").write_text(json.dumps(processor))
    if family == "oneformer":
        save_tokenizer(folder)
    return folder
