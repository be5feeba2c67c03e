"""Examples that assemble contrast_attn into complete pipelines."""
