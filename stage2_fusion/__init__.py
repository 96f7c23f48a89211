"""Stage 2: re-ID training and testing of the methods in ``stage2_fusion/methods/`` (one file and one
MethodSpec each). Only TSME fuses (PwIF of a real and a generated stream); the package keeps the
design card's name."""
