"""Networks both stages build on: the torchvision-layout ResNet (stem, stages, weight
loading) and VGG16 (MSO's PEF loss), with the one safe path that loads their weights."""
