"""Plugin tests run offline with their own cache folder (as tests/conftest.py does for the package)."""

from __future__ import annotations

import os
import tempfile

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("PROTOLENS_CACHE_DIR", tempfile.mkdtemp(prefix="protolens-plugin-tests-"))
