"""Vision-transformer helpers: loading (timm), preprocessing, attention capture and aggregation."""
