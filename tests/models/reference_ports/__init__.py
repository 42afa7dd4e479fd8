"""Golden ports of each model family's original inference code, for parity tests (not part of the package).

Each port follows its original repository's evaluation path step by step, with the libraries that path uses
(Pillow for the resize, Python loops over queries where the original loops): ``detectron2`` (MaskFormer,
Mask2Former, OneFormer), ``detr`` (DETR's PostProcessPanoptic), ``eomt`` (EoMT, EoMT-DINOv3). They are written
from the originals' rules, which each module cites, and return their results in the original's own form.
"""
