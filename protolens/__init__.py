"""protolens: see and correct what vision transformers segment.

Importing this package is cheap: it pulls in neither torch nor Qt. The layers are
``core`` (numpy, Pillow, OpenCV) <- ``models`` (torch, timm, transformers) <- ``services``
(use cases) <- ``gui`` (PySide6, pyqtgraph) and ``cli`` (typer).
"""

__version__ = "0.1.0"
