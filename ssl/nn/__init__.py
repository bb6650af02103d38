"""Network building blocks: backbones, heads, losses and the negative queue."""
