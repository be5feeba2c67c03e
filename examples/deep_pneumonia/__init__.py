"""Deep Pneumonia (Wei et al., 2022) assembled from contrast_attn: data, training, evaluation."""
