"""Shared building blocks of the VI-ReID pipeline: config, datasets, caches, samplers,
augmentation, protocols, metrics, checkpoints and run logging.

Both stages import from here; they never import each other (see STYLE.md, section 2).
"""
