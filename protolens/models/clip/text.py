"""Class text embeddings for dense CLIP: prompt-template averaging per synonym, cached per synonym string.

METHODS.md §5 step 1 (as in wangf3014/SCLIP ``clip_segmentor.py``, ``CLIPForSegmentation.__init__``, and
chongzhou96/MaskCLIP ``tools/maskclip_utils/prompt_engineering.py``): every synonym is put into each of the 80
ImageNet templates, the 80 texts are encoded, each embedding is L2-normalised, the 80 are averaged and the mean
is L2-normalised again.

Embeddings are cached per synonym string, keyed by (model name, weights sha256 or ``"random"``, templates,
synonym): a bounded in-memory LRU, plus an optional :class:`~protolens.core.cache.DiskCache`. Editing one class
of a list therefore re-encodes only that class's synonyms; :func:`text_stats` counts encoded and cached synonyms
so tests and benchmarks can check it.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from protolens.core.cache import DiskCache, MemoryCache
from protolens.core.hashing import sha256_json
from protolens.core.prompts import IMAGENET_TEMPLATES, ClassPrompt
from protolens.models.clip.loading import clip_identity, tokenize

TEXT_BATCH = 256
"""Texts encoded per forward of the text tower."""
_MEMORY: MemoryCache[np.ndarray] = MemoryCache(4096)
_STATS_LOCK = threading.Lock()


@dataclass
class TextEncoderStats:
    """Counts of synonym embeddings: ``encoded`` by the text tower, ``cached`` found in a cache (memory or disk).

    ``disk`` counts the cached ones that came from the disk cache.
    """

    encoded: int = 0
    cached: int = 0
    disk: int = 0

    def add(self, other: TextEncoderStats) -> None:
        """Add ``other``'s counts to these."""
        self.encoded += other.encoded
        self.cached += other.cached
        self.disk += other.disk


_TOTAL = TextEncoderStats()


def text_stats() -> TextEncoderStats:
    """A copy of the process-wide counts since the last :func:`reset_text_stats`."""
    with _STATS_LOCK:
        return TextEncoderStats(_TOTAL.encoded, _TOTAL.cached, _TOTAL.disk)


def reset_text_stats(*, clear_cache: bool = False) -> None:
    """Zero the process-wide counts; with ``clear_cache`` also empty the in-memory embedding cache."""
    with _STATS_LOCK:
        _TOTAL.encoded = _TOTAL.cached = _TOTAL.disk = 0
    if clear_cache:
        _MEMORY.clear()


def synonym_key(model_id: tuple[str, str], synonym: str, templates: Sequence[str] = IMAGENET_TEMPLATES) -> str:
    """Cache key (hex sha256) of one synonym's embedding for a model identity (name, weights key)."""
    return sha256_json(["clip-text-v1", model_id[0], model_id[1], list(templates), synonym])


def _encode_tokens(model: nn.Module, tokens: torch.Tensor) -> torch.Tensor:
    """``model.encode_text(tokens)``, faster: with a causal mask and end-of-text (argmax) pooling, the pooled
    token sees only the tokens up to it, so the sequences are cut after the longest text's end-of-text token
    (exact; a test compares with ``encode_text``). Other text towers run ``encode_text`` as it is."""
    mask = getattr(model, "attn_mask", None)
    if (getattr(model, "text_pool_type", None) != "argmax" or mask is None or not hasattr(model, "token_embedding")
            or not torch.equal(torch.isinf(mask), torch.ones_like(mask, dtype=torch.bool).triu(1))):
        return model.encode_text(tokens)
    length = int(tokens.argmax(dim=-1).max()) + 1
    cast = model.transformer.get_cast_dtype()
    x = model.token_embedding(tokens[:, :length]).to(cast) + model.positional_embedding[:length].to(cast)
    x = model.ln_final(model.transformer(x, attn_mask=mask[:length, :length]))
    x = x[torch.arange(x.shape[0], device=x.device), tokens[:, :length].argmax(dim=-1)]
    proj = model.text_projection
    return proj(x) if isinstance(proj, nn.Linear) else (x if proj is None else x @ proj)


@torch.no_grad()
def encode_synonyms(model: nn.Module, synonyms: Sequence[str], *, device: str = "cpu",
                    templates: Sequence[str] = IMAGENET_TEMPLATES) -> np.ndarray:
    """Template-averaged embeddings of ``synonyms``, uncached.

    Parameters
    ----------
    model : open_clip CLIP
        Its ``encode_text`` and tokenizer (``clip_identity(model)[0]``, default ``ViT-B-16``) are used.
    synonyms : sequence of str
    device : str
        Where ``model`` lives.
    templates : sequence of str
        Prompt templates with one ``{}`` (default: CLIP's 80 ImageNet templates).

    Returns
    -------
    numpy.ndarray
        (len(synonyms), D) float32, rows of unit L2 norm: ``normalise(mean_t(normalise(E(t(synonym)))))``.
    """
    identity = clip_identity(model)
    name = identity[0].split("+")[0] if identity else "ViT-B-16"
    context = getattr(model, "context_length", None)
    texts = [t.format(s) for s in synonyms for t in templates]
    chunks = []
    for start in range(0, len(texts), TEXT_BATCH):
        tokens = tokenize(texts[start:start + TEXT_BATCH], name, context_length=context).to(device)
        chunks.append(_encode_tokens(model, tokens).float())
    if not chunks:
        return np.zeros((0, int(model.text_projection.shape[-1])), np.float32)
    emb = torch.cat(chunks).reshape(len(synonyms), len(templates), -1)
    emb = torch.nn.functional.normalize(emb, dim=-1).mean(dim=1)
    return torch.nn.functional.normalize(emb, dim=-1).cpu().numpy().astype(np.float32)


def encode_texts(model: nn.Module, prompts: Sequence[ClassPrompt], *, device: str = "cpu",
                 cache: DiskCache | None = None, templates: Sequence[str] = IMAGENET_TEMPLATES,
                 stats: TextEncoderStats | None = None) -> list[np.ndarray]:
    """Text embeddings of a class list, one block per class (METHODS.md §5 step 1), cached per synonym.

    Parameters
    ----------
    model : open_clip CLIP
        Tagged with :func:`~protolens.models.clip.loading.clip_identity` (as :func:`load_clip` does); an
        untagged model is never cached.
    prompts : sequence of ClassPrompt
        From :func:`protolens.core.prompts.parse_class_list`.
    device : str
        Where ``model`` lives.
    cache : DiskCache, optional
        Persistent cache shared with other processes; the in-memory LRU (4096 synonyms) is always used.
    templates : sequence of str
        Prompt templates (default: the 80 ImageNet templates); part of the cache key.
    stats : TextEncoderStats, optional
        Receives this call's counts (they are also added to the process-wide :func:`text_stats`).

    Returns
    -------
    list of numpy.ndarray
        Per class (n_synonyms, D) float32, unit rows, in the order of ``prompts`` and of each class's synonyms.
    """
    identity = clip_identity(model)
    unique = list(dict.fromkeys(s for p in prompts for s in p.synonyms))
    found: dict[str, np.ndarray] = {}
    counts = TextEncoderStats()
    keys = {s: synonym_key(identity, s, templates) for s in unique} if identity else {}
    for synonym in unique if identity else ():
        value = _MEMORY.get(keys[synonym])
        if value is None and cache is not None:
            hit = cache.get(keys[synonym])
            if hit is not None and "embedding" in hit[0]:
                value = hit[0]["embedding"].astype(np.float32)
                _MEMORY.put(keys[synonym], value)
                counts.disk += 1
        if value is not None:
            found[synonym] = value
            counts.cached += 1
    missing = [s for s in unique if s not in found]
    if missing:
        encoded = encode_synonyms(model, missing, device=device, templates=templates)
        for synonym, row in zip(missing, encoded, strict=True):
            found[synonym] = row
            if identity:
                _MEMORY.put(keys[synonym], row)
                if cache is not None:
                    cache.put(keys[synonym], {"embedding": row}, {"synonym": synonym, "model": list(identity)})
        counts.encoded += len(missing)
    with _STATS_LOCK:
        _TOTAL.add(counts)
    if stats is not None:
        stats.add(counts)
    return [np.stack([found[s] for s in p.synonyms]).astype(np.float32) for p in prompts]
