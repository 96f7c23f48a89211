"""Re-ID losses: identity cross-entropy, weighted-regularisation triplet (WRT),
hetero-centre (HC).

* WRT: Ye et al., AGW (TPAMI 2021), Eq. 5; code mangye16/Cross-Modal-Re-ID-baseline:loss.py
  ``TripletLoss_WRT``. For anchor i with Euclidean distances d_ij over the whole batch
  (both modalities):
      w+_ij = exp(d_ij) / sum_{k in P(i)} exp(d_ik)      over positives P(i) (i included),
      w-_ij = exp(-d_ij) / sum_{k in N(i)} exp(-d_ik)    over negatives N(i),
      L = mean_i log(1 + exp(sum_j w+_ij d_ij - sum_j w-_ij d_ij)).
  As in the code: distances are sqrt(clamp(d^2, 1e-12)), the softmax denominators carry
  +1e-6, no margin.
* HC: Zhu et al., "Hetero-Center Loss for Cross-Modality Person Re-Identification",
  Neurocomputing 2020, Eq. 3; as TSME uses it (heterogeneity_loss.py ``hetero_loss``,
  margin 0, 'l2'): sum over identities of ||c_vis - c_ir||^2 with c the mean embedding of
  an identity's visible (infrared) samples in the batch. TSME chunks the batch assuming
  contiguous identity blocks; we group by label, which is the same on such batches and
  also correct on others.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def pairwise_euclidean(x: torch.Tensor) -> torch.Tensor:
    """(N, D) -> (N, N) Euclidean distances, sqrt(clamp(d^2, min=1e-12)) as in AGW."""
    sq = x.pow(2).sum(dim=1, keepdim=True)
    d2 = sq + sq.t() - 2.0 * (x @ x.t())
    return d2.clamp(min=1e-12).sqrt()


def _softmax_weights(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    masked = values * mask
    max_v = masked.max(dim=1, keepdim=True).values
    e = torch.exp(values - max_v) * mask
    return e / (e.sum(dim=1, keepdim=True) + 1e-6)


def wrt_loss(features: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted-regularisation triplet loss (see the module docstring).

    Args:
        features: (N, D) float, pre-BN features of the whole batch.
        labels: (N,) int64 identity labels.

    Returns:
        (loss, correct): scalar float loss; int64 count of anchors whose weighted negative
        distance is >= the weighted positive one (AGW's triplet "accuracy").
    """
    dist = pairwise_euclidean(features.float())
    same = labels.view(-1, 1).eq(labels.view(1, -1))
    is_pos, is_neg = same.float(), (~same).float()
    dist_ap, dist_an = dist * is_pos, dist * is_neg
    furthest_positive = (dist_ap * _softmax_weights(dist_ap, is_pos)).sum(dim=1)
    closest_negative = (dist_an * _softmax_weights(-dist_an, is_neg)).sum(dim=1)
    loss = F.softplus(furthest_positive - closest_negative).mean()  # = SoftMarginLoss(cn - fp, 1)
    return loss, (closest_negative >= furthest_positive).sum()


def hetero_centre_loss(embeddings: torch.Tensor, labels: torch.Tensor, is_ir: torch.Tensor) -> torch.Tensor:
    """Hetero-centre loss: sum over identities of ||mean_vis - mean_ir||^2.

    Args:
        embeddings: (N, D) float (TSME: L2-normalised 512-d part embeddings).
        labels: (N,) int64 identity labels.
        is_ir: (N,) bool modality of each row.

    Returns:
        Scalar float; identities missing from one modality in the batch contribute 0.
    """
    classes, inverse = labels.unique(return_inverse=True)
    n_cls = classes.numel()
    emb = embeddings.float()
    sums = emb.new_zeros(2, n_cls, emb.shape[1])
    counts = emb.new_zeros(2, n_cls)
    modality = is_ir.long()
    sums.index_put_((modality, inverse), emb, accumulate=True)
    counts.index_put_((modality, inverse), torch.ones_like(inverse, dtype=emb.dtype), accumulate=True)
    present = (counts > 0).all(dim=0)  # (n_cls,)
    centres = sums / counts.clamp(min=1).unsqueeze(-1)  # (2, n_cls, D)
    return ((centres[0] - centres[1]).pow(2).sum(dim=1) * present).sum()


def identity_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over training identities; logits (N, C) float, labels (N,) int64."""
    return F.cross_entropy(logits.float(), labels)
