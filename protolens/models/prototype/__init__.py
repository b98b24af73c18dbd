"""Prototype-guided zero-shot segmentation models (arXiv 2512.19957): the narrow ViT and its helpers."""
