"""segcore: panoptic segmentation labeling and exact Panoptic Quality, as a library importable without Ray."""

__version__ = "0.1.0"
