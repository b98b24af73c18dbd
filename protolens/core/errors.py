"""Typed errors. ``str(error)`` is always one line a user can act on."""

from __future__ import annotations

from pathlib import Path


class ProtolensError(Exception):
    """Base class of every error protolens raises on purpose."""


class ImageReadError(ProtolensError):
    """An image could not be read.

    Attributes
    ----------
    path : Path
        The file that failed.
    reason : str
        Why, in a few words (``"file is empty (0 bytes)"``, ``"truncated or corrupt image data"``...).
    """

    def __init__(self, path: str | Path, reason: str) -> None:
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class WeightsNotFoundError(ProtolensError):
    """Weights for a model are neither at a given path nor in the local cache."""


class CheckpointError(ProtolensError):
    """A weights file exists but cannot be used (wrong format, wrong architecture, unsafe pickle)."""


class ParamError(ProtolensError):
    """A backend parameter is unknown, of the wrong type, or out of bounds."""


class BackendUnavailableError(ProtolensError):
    """A backend plugin is unknown or failed to import; other backends keep working."""


class SidecarError(ProtolensError):
    """A result sidecar is corrupt or of an unknown schema; it is moved aside, never overwritten."""


class StoreWriteError(ProtolensError):
    """A result could not be written (disk full, permission denied); nothing already saved was lost."""


class Cancelled(ProtolensError):
    """A job was cancelled by its user (raised at the next cancellation check)."""


class DeviceOutOfMemoryError(ProtolensError):
    """A device ran out of memory even with a batch of one; the job may be retried on the CPU."""


class ExecutorError(ProtolensError):
    """An executor cannot run a job: Ray not installed, a cluster that cannot be reached, no workers."""
