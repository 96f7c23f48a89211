"""Shared building blocks of the VI-ReID pipeline, below both stages.

| package / module        | what it holds                                                        |
|-------------------------|----------------------------------------------------------------------|
| ``config``, ``profiles/`` | the run configuration and the two shipped profiles                 |
| ``datasets/``           | one reader per dataset, each with its :class:`DatasetSpec`            |
| ``data/``               | image decoding, array cache, partner cache, identity sampler, augmentation |
| ``evaluation/``         | test protocols, ranking metrics, re-ranking                          |
| ``demo/``               | the procedural demo dataset (identities, scenes, rendering, writing) and its ImageNet stand-in |
| ``nets/``               | ResNet and VGG16 layouts and their weight loading                    |
| ``checkpoint``, ``atomic``, ``runlog``, ``runtime``, ``guard``, ``errors`` | files, logging, devices, the non-finite guard, UserError |

Both stages import from here; they never import each other, and nothing here imports
either stage (CONTRIBUTING.md, "Layout").
"""
