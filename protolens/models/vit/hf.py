"""Hugging Face vision transformers (``transformers``): DINOv2 (with and without registers) and CLIP towers.

A model is named by its Hub id (``facebook/dinov2-small``). Weights come from a snapshot folder
(``config.json`` + ``model.safetensors``), a single ``.safetensors`` file (architecture from the built-in
config of that id), or the local Hugging Face cache; random weights are built from the built-in config.
Models are created with SDPA attention; protolens recomputes the attention from queries and keys.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from protolens.core.errors import CheckpointError

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

#: Architectures of the Hub ids protolens knows, so random weights need no download.
HF_CONFIGS: dict[str, dict[str, Any]] = {
    "facebook/dinov2-small": {"model_type": "dinov2", "hidden_size": 384, "num_hidden_layers": 12,
                              "num_attention_heads": 6, "intermediate_size": 1536, "patch_size": 14,
                              "image_size": 518},
    "facebook/dinov2-base": {"model_type": "dinov2", "hidden_size": 768, "num_hidden_layers": 12,
                             "num_attention_heads": 12, "intermediate_size": 3072, "patch_size": 14,
                             "image_size": 518},
    "facebook/dinov2-with-registers-small": {"model_type": "dinov2_with_registers", "hidden_size": 384,
                                             "num_hidden_layers": 12, "num_attention_heads": 6,
                                             "intermediate_size": 1536, "patch_size": 14, "image_size": 518,
                                             "num_register_tokens": 4},
    "openai/clip-vit-base-patch16": {"model_type": "clip_vision_model", "hidden_size": 768,
                                     "num_hidden_layers": 12, "num_attention_heads": 12,
                                     "intermediate_size": 3072, "patch_size": 16, "image_size": 224,
                                     "projection_dim": 512},
}


def is_hf_name(name: str) -> bool:
    """Whether ``name`` is a Hugging Face Hub id rather than a timm model name."""
    return "/" in name


def _config(values: dict[str, Any]) -> Any:
    from transformers import CLIPVisionConfig, Dinov2Config, Dinov2WithRegistersConfig

    kinds = {"dinov2": Dinov2Config, "dinov2_with_registers": Dinov2WithRegistersConfig,
             "clip_vision_model": CLIPVisionConfig, "clip": CLIPVisionConfig}
    values = dict(values)
    kind = values.pop("model_type")
    if kind not in kinds:
        raise CheckpointError(f"model type {kind!r} is not a supported vision transformer")
    return kinds[kind](**values)


def _model_class(config: Any) -> type[nn.Module]:
    from transformers import CLIPVisionModel, Dinov2Model, Dinov2WithRegistersModel

    return {"dinov2": Dinov2Model, "dinov2_with_registers": Dinov2WithRegistersModel,
            "clip_vision_model": CLIPVisionModel}[config.model_type]


def create_hf(name: str) -> nn.Module:
    """Random-weight model of a known Hub id. Raises :class:`CheckpointError` for an unknown id."""
    if name not in HF_CONFIGS:
        known = ", ".join(sorted(HF_CONFIGS))
        raise CheckpointError(f"no built-in architecture for {name!r}; give its snapshot folder (known: {known})")
    config = _config(HF_CONFIGS[name])
    config._name_or_path = name
    return _model_class(config)(config)


def load_hf(name: str, weights: str | Path | None) -> nn.Module:
    """Build ``name`` and load ``weights`` (snapshot folder or .safetensors file; None = random).

    Raises :class:`CheckpointError` when the folder/file does not fit a supported architecture.
    """
    if weights is None:
        return create_hf(name)
    path = Path(weights)
    folder = path if path.is_dir() else path.parent
    try:
        if (folder / "config.json").is_file():
            from transformers import AutoConfig

            config = AutoConfig.from_pretrained(folder, local_files_only=True)
            config = getattr(config, "vision_config", None) or config
            if config.model_type == "clip_vision_model" or config.model_type == "clip":
                from transformers import CLIPVisionModel

                return CLIPVisionModel.from_pretrained(folder, local_files_only=True, attn_implementation="sdpa")
            return _model_class(config).from_pretrained(folder, local_files_only=True, attn_implementation="sdpa")
        model = create_hf(name)
        from safetensors.torch import load_file

        missing, unexpected = model.load_state_dict(load_file(str(path)), strict=False)
    except CheckpointError:
        raise
    except Exception as exc:  # noqa: BLE001 - transformers raises many types for bad folders
        raise CheckpointError(f"{path}: cannot load {name} ({type(exc).__name__}: {exc})") from None
    if missing:
        raise CheckpointError(f"{path}: these weights do not fit {name} ({len(missing)} weights missing, "
                              f"e.g. {missing[0]})")
    return model
