"""Model layer: the only package (with plugins/) that imports torch, timm or transformers.

Modules import torch at module level only where they cannot work without it; ``api`` and
``registry`` stay torch-free so backends can be listed cheaply.
"""
