"""Metrics: image quality, segmentation, boxes."""
