"""Segmentation models: the Segmenter contract, a registry of model specs, one module per backend."""
