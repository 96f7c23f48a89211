"""Evaluation: the datasets' test protocols (query/gallery trials), the ranking metrics
(CMC, mAP, mINP; a fast binned engine and the readable per-query reference) and
k-reciprocal re-ranking."""
