"""Datasets DynTune can generate itself."""
from .embedded import CLASSES, default_cache_dir, ensure_embedded_dataset

__all__ = ['CLASSES', 'default_cache_dir', 'ensure_embedded_dataset']
