"""``nn.Module`` layers with parameters: attention, pooling, heads."""

__all__: list[str] = []
