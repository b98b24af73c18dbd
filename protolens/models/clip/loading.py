"""Building open_clip CLIP models, loading their weights safely, and tokenising text offline.

We use ``open_clip`` (not ``transformers.CLIPModel``): its ``VisionTransformer`` keeps the last block's
``nn.MultiheadAttention`` with a fused ``in_proj`` as in OpenAI's original code, the layout the training-free
dense methods (MaskCLIP, SCLIP, ClearCLIP; METHODS.md §5) were written against, and its BPE vocabulary ships
inside the package, so the tokenizer never touches the network.

Weights are an open_clip state dict: ``.safetensors`` (e.g. ``open_clip_model.safetensors`` of the Hugging Face
repository ``timm/vit_base_patch16_clip_224.openai``) or ``.bin``/``.pt``/``.pth`` read with
``torch.load(weights_only=True)``. OpenAI's CLIP weights were trained with QuickGELU: open_clip names that
architecture ``ViT-B-16-quickgelu``; :func:`load_clip` also switches QuickGELU on when an
``open_clip_config.json`` beside the weights says ``"quick_gelu": true`` (the Hugging Face repositories ship one).

Loaded models are reused, one per (name, weights, device), through the same bounded per-device cache as the
ViTs (:mod:`protolens.models.vit.loading`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from protolens.core.errors import CheckpointError
from protolens.models.vit.loading import _LOCK, _device_cache, _release, load_fitting_state, read_state_dict

DEFAULT_CLIP = "ViT-B-16"
CONFIG_FILE = "open_clip_config.json"
_log = logging.getLogger(__name__)
_TOKENIZERS: dict[tuple[str, int | None], object] = {}
_TOKENIZER_LOCK = threading.Lock()


def set_clip_identity(model: nn.Module, name: str, weights_key: str) -> nn.Module:
    """Tag ``model`` with its identity (model name, weights sha256 or ``"random"``): the text-cache key.

    :func:`load_clip` tags the models it builds; call this for a CLIP built any other way (tests).
    Returns ``model``.
    """
    model.protolens_clip_id = (str(name), str(weights_key))
    return model


def clip_identity(model: nn.Module) -> tuple[str, str] | None:
    """(model name, weights key) set by :func:`set_clip_identity` / :func:`load_clip`, or None."""
    return getattr(model, "protolens_clip_id", None)


def _quick_gelu_from_config(weights: Path | None) -> bool:
    """``model_cfg.quick_gelu`` of an ``open_clip_config.json`` in the weights' folder (False when absent)."""
    if weights is None:
        return False
    folder = weights if weights.is_dir() else weights.parent
    config = folder / CONFIG_FILE
    if not config.is_file():
        return False
    try:
        cfg = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        _log.warning("%s: unreadable (%s); assuming GELU", config, exc)
        return False
    return bool((cfg.get("model_cfg") or {}).get("quick_gelu", False))


def create_clip(name: str = DEFAULT_CLIP, *, quick_gelu: bool = False) -> nn.Module:
    """open_clip model ``name`` (``"ViT-B-16"``, ``"ViT-B-16-quickgelu"``, ...) with random weights, eval mode.

    Raises :class:`CheckpointError` for a name open_clip does not know or a model whose image tower is not a
    plain ``VisionTransformer`` (the dense modes need its last attention block).
    """
    import open_clip

    if name not in open_clip.list_models():
        raise CheckpointError(f"unknown CLIP model {name!r}; open_clip knows e.g. ViT-B-16, ViT-B-16-quickgelu, "
                              "ViT-L-14")
    model = open_clip.create_model(name, pretrained=None, force_quick_gelu=quick_gelu)
    if not isinstance(getattr(model, "visual", None), open_clip.transformer.VisionTransformer):
        raise CheckpointError(f"{name!r}: its image tower is not a ViT; clip-dense needs a ViT CLIP")
    return model.eval()


def weights_file(path: Path) -> Path:
    """The weights file of ``path``: itself, or in a folder the first ``open_clip_*`` (else any) ``.safetensors``
    / ``.bin`` / ``.pt`` / ``.pth`` file by name. Raises :class:`CheckpointError` when there is none."""
    if not path.is_dir():
        if not path.is_file():
            raise CheckpointError(f"{path}: no such weights file")
        return path
    candidates = sorted(p for p in path.iterdir() if p.suffix in (".safetensors", ".bin", ".pt", ".pth"))
    preferred = [p for p in candidates if p.name.startswith("open_clip_")]
    if not candidates:
        raise CheckpointError(f"{path}: no weights file (.safetensors, .bin, .pt, .pth) in this folder")
    return (preferred or candidates)[0]


def _load_weights(model: nn.Module, name: str, file: Path) -> None:
    load_fitting_state(model, read_state_dict(file), file, f"the open_clip model {name}")


def load_clip(name: str = DEFAULT_CLIP, weights: str | Path | None = None, device: str = "cpu", *,
              weights_key: str | None = None, quick_gelu: bool | None = None) -> nn.Module:
    """A ready (eval mode, on ``device``) open_clip CLIP, built once per (name, weights, device) and reused.

    Parameters
    ----------
    name : str
        open_clip model name (``"ViT-B-16"``; ``"ViT-B-16-quickgelu"`` for OpenAI's weights).
    weights : path or None
        An open_clip state dict file (``.safetensors``; ``.bin``/``.pt``/``.pth`` read with
        ``weights_only=True``) or a folder holding one (see :func:`weights_file`); None builds random weights
        (tests and benchmarks only; seeded, so the same in every process).
    device : str
        Torch device string.
    weights_key : str, optional
        Identity of the weights (their sha256) for the reuse cache and the text-embedding cache; defaults to
        the sha256 of the file (memoised per path, size and mtime), ``"random"`` without weights.
    quick_gelu : bool, optional
        Force QuickGELU on or off; None: on when ``name`` says so or an ``open_clip_config.json`` beside the
        weights has ``"quick_gelu": true``.

    Returns
    -------
    torch.nn.Module
        The ``open_clip.model.CLIP``, tagged with :func:`clip_identity` ``(name, weights_key)``.

    Raises
    ------
    CheckpointError
        Unknown model, missing or unreadable weights, or weights of another architecture (wrong shapes; the
        message names the file and the model).
    """
    path = weights_file(Path(weights)) if weights is not None else None
    if weights_key is None:
        if path is None:
            weights_key = "random"
        else:
            from protolens.models.weights import weights_sha256

            weights_key = weights_sha256(path)
    gelu = _quick_gelu_from_config(path) if quick_gelu is None else quick_gelu
    key = (f"open_clip:{name}{'+quickgelu' if gelu else ''}", weights_key, device)
    with _LOCK:
        cached = _device_cache(device).get(key)
    if cached is not None:
        return cached
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        model = create_clip(name, quick_gelu=gelu)
    if path is not None:
        _load_weights(model, name, path)
    model = set_clip_identity(model.eval().to(device), name + ("+quickgelu" if gelu else ""), weights_key)
    with _LOCK:
        cache = _device_cache(device)
        cached = cache.get(key)
        if cached is not None:
            return cached
        evicted = [old for _, old in cache.put(key, model)]
    _release(evicted)
    return model


def _tokenizer(name: str, context_length: int | None) -> object:
    import open_clip

    with _TOKENIZER_LOCK:
        tok = _TOKENIZERS.get((name, context_length))
        if tok is None:
            tok = open_clip.get_tokenizer(name, context_length=context_length)
            _TOKENIZERS[(name, context_length)] = tok
    return tok


def tokenize(texts: Sequence[str], name: str = DEFAULT_CLIP, *, context_length: int | None = None) -> torch.Tensor:
    """Token ids of ``texts`` for open_clip model ``name``, offline.

    Parameters
    ----------
    texts : sequence of str
    name : str
        open_clip model name; the CLIP ViTs use open_clip's ``SimpleTokenizer`` (byte-pair encoding with the
        vocabulary file bundled in the package: no download).
    context_length : int, optional
        Tokens per text (default: the model's, 77 for CLIP); longer texts are truncated, keeping the
        end-of-text token.

    Returns
    -------
    torch.Tensor
        (len(texts), context_length) int64: start-of-text 49406, the BPE tokens, end-of-text 49407, zeros.
    """
    return _tokenizer(name, context_length)(list(texts))
