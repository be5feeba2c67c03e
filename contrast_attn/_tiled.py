"""The tiled contrastive kernel, now part of :mod:`contrast_attn._rows` (names kept here)."""

from ._rows import TILE_BYTES, default_chunk_size

__all__ = ["TILE_BYTES", "default_chunk_size"]
