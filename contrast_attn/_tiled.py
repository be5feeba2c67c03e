"""The tiling constants of the contrastive row core (defined in :mod:`contrast_attn._rows`)."""

from ._rows import TILE_BYTES, default_chunk_size

__all__ = ["TILE_BYTES", "default_chunk_size"]
