"""CLIP for dense, text-prompted segmentation: open_clip loading (:mod:`.loading`) and the training-free dense
modes MaskCLIP / SCLIP / ClearCLIP with sliding windows and cached text embeddings (:mod:`.dense`)."""
