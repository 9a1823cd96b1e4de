"""Data sources: one module per provider layout, registered by name in ``SOURCES``."""

from radlab.data.sources.base import SOURCES, Source, detect_source
from radlab.registry import import_submodules

import_submodules(__name__)

__all__ = ["SOURCES", "Source", "detect_source"]
