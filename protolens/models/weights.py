"""Finding, identifying and (only when asked) downloading model weights.

Sources, in order: a path the user gives (a file, or a Hugging Face snapshot folder), then the local
Hugging Face cache (``HF_HOME`` / ``HF_HUB_CACHE``). Nothing here downloads unless :func:`pull_weights`
is called, which ``protolens weights pull NAME`` and the GUI's download dialog do on request.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from protolens.core.errors import Cancelled, WeightsNotFoundError
from protolens.core.hashing import sha256_file
from protolens.core.jobs import CancelToken
from protolens.models.api import WeightsSpec

WEIGHT_FILE_NAMES = ("model.safetensors", "pytorch_model.bin", "model.pth")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_sha_memo: dict[tuple[str, int, int], str] = {}
_sha_lock = threading.Lock()


def how_to_get(spec: WeightsSpec | None) -> str:
    """The sentence naming both ways to get missing weights."""
    name = spec.name if spec else "NAME"
    return (f"get them with `protolens weights pull {name}` (GUI: Weights > Download...), "
            "or pass a local file with --weights FILE (.safetensors, or .pth loaded with weights_only)")


def hf_cached_file(spec: WeightsSpec) -> Path | None:
    """The weights file in the local Hugging Face cache, or None. Never touches the network."""
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(spec.hf_repo, spec.filename)
    return Path(found) if isinstance(found, str) and Path(found).is_file() else None


def _file_in_folder(folder: Path) -> Path | None:
    for name in WEIGHT_FILE_NAMES:
        if (folder / name).is_file():
            return folder / name
    candidates = sorted(p for p in folder.iterdir() if p.suffix in WEIGHT_SUFFIXES and p.is_file())
    return candidates[0] if len(candidates) == 1 else None


def resolve_weights(spec: WeightsSpec | None, user_path: str | Path | None = None) -> Path:
    """The weights file to load.

    Parameters
    ----------
    spec : WeightsSpec or None
        The catalogue entry (used for the cache look-up and messages).
    user_path : path, optional
        A file (``.safetensors``, ``.pth``, ``.pt``, ``.bin``) or a snapshot folder holding one.

    Raises
    ------
    WeightsNotFoundError
        The given path does not exist or holds no weights file, or nothing is cached; the message names
        both ways to get them.
    """
    if user_path is not None:
        path = Path(user_path).expanduser()
        if path.is_dir():
            found = _file_in_folder(path)
            if found is None:
                raise WeightsNotFoundError(f"{path}: no weights file ({', '.join(WEIGHT_FILE_NAMES)}) in this folder")
            return found
        if not path.is_file():
            raise WeightsNotFoundError(f"{path}: weights file does not exist; {how_to_get(spec)}")
        return path
    if spec is not None:
        cached = hf_cached_file(spec)
        if cached is not None:
            return cached
    label = spec.name if spec else "this model"
    raise WeightsNotFoundError(f"weights for {label} are not on this machine: {how_to_get(spec)}")


def weights_sha256(path: str | Path) -> str:
    """SHA-256 of a weights file. Hugging Face cache blobs are named by it; other files are hashed once
    per (path, size, mtime) and memoised (a ViT-B file takes about a second)."""
    path = Path(path)
    real = path.resolve()
    if real.parent.name == "blobs" and _HEX64.match(real.name):
        return real.name
    stat = real.stat()
    key = (str(real), stat.st_size, stat.st_mtime_ns)
    with _sha_lock:
        if key in _sha_memo:
            return _sha_memo[key]
    digest = sha256_file(real)
    with _sha_lock:
        _sha_memo[key] = digest
    return digest


def remote_info(spec: WeightsSpec) -> dict[str, Any]:
    """Size and cache state of the remote file (asks the Hub; call only on a user's request).

    Returns ``{"size_bytes": int | None, "is_cached": bool}``.
    """
    from huggingface_hub import hf_hub_download

    info = hf_hub_download(spec.hf_repo, spec.filename, dry_run=True)
    return {"size_bytes": info.file_size, "is_cached": info.is_cached}


def _progress_class(callback: Callable[[int, int | None], None] | None, cancel: CancelToken | None) -> type:
    from tqdm.auto import tqdm

    class _Reporter(tqdm):  # type: ignore[misc]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = callback is not None
            super().__init__(*args, **kwargs)
            self._done = 0

        def update(self, n: float | None = 1) -> bool | None:
            if cancel is not None and cancel.is_set:
                raise Cancelled("download cancelled; the partial file is kept so a later pull resumes it")
            self._done += int(n or 0)
            if callback is not None:
                callback(self._done, int(self.total) if self.total else None)
            return super().update(n)

    return _Reporter


def pull_weights(spec: WeightsSpec, *, progress: Callable[[int, int | None], None] | None = None,
                 cancel: CancelToken | None = None) -> Path:
    """Download weights into the Hugging Face cache (explicit user action only) and return the file.

    Parameters
    ----------
    spec : WeightsSpec
        What to download.
    progress : callable(done_bytes, total_bytes or None), optional
        Called as bytes arrive (replaces the console bar).
    cancel : CancelToken, optional
        Checked on every chunk; raises :class:`Cancelled`.

    Raises
    ------
    Cancelled, WeightsNotFoundError
        Cancelled by the user, or the download failed (no network, unknown repository); the message says why.
    """
    from huggingface_hub import hf_hub_download

    try:
        for extra in spec.extra_files:
            hf_hub_download(spec.hf_repo, extra)
        path = Path(hf_hub_download(spec.hf_repo, spec.filename, tqdm_class=_progress_class(progress, cancel)))
    except Cancelled:
        raise
    except Exception as exc:  # noqa: BLE001 - network/hub errors come in many types
        raise WeightsNotFoundError(f"download of {spec.name} from {spec.hf_repo} failed: {exc}") from exc
    if spec.sha256 and weights_sha256(path) != spec.sha256:
        raise WeightsNotFoundError(f"downloaded {path} does not match the expected sha256 {spec.sha256}")
    return path


def weights_catalogue_json(specs: list[WeightsSpec]) -> str:
    """The catalogue as JSON lines, with each entry's local cache state (for ``protolens weights list``)."""
    rows = []
    for spec in specs:
        cached = hf_cached_file(spec)
        rows.append({"name": spec.name, "hf_repo": spec.hf_repo, "file": spec.filename,
                     "size_bytes": spec.size_bytes, "licence": spec.licence,
                     "cached": str(cached) if cached else None})
    return "\n".join(json.dumps(row) for row in rows)
