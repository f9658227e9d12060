"""The blocked metric pass (several languages at once, row chunks, maxima read off the margin's top-k) against the
full similarity and margin matrices scored by `tie_aware_accuracy`, with duplicate sentences (exact ties) and every
k the margin allows. (tests/test_analysis.py checks those against brute-force loops.)"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from midalign.analysis.metrics import block_metrics, margin_matrix, tie_aware_accuracy


@pytest.mark.parametrize("k", [1, 2, 4])
@pytest.mark.parametrize("chunk", [3, 64])
def test_block_metrics_match_brute_force_with_duplicates(k, chunk):
    g = torch.Generator().manual_seed(k + chunk)
    rows = [0, 1, 1, 2, 3, 3, 3, 4, 5, 6]  # duplicate sentences: exact ties in every route
    xa = torch.randn(7, 6, generator=g)[rows]
    xbs = [
        (xa + s * torch.randn(len(rows), 6, generator=g))[torch.randperm(len(rows), generator=g)] for s in (0.3, 1.0)
    ]
    xbs.append(xa.clone())  # b identical to a: ties with the translation itself
    unit = lambda v: F.normalize(v, dim=-1)  # noqa: E731
    centred = lambda v: F.normalize(v - v.mean(0), dim=-1)  # noqa: E731
    got = block_metrics(
        unit(xa),
        torch.stack([unit(x) for x in xbs]),
        centred(xa),
        torch.stack([centred(x) for x in xbs]),
        k=k,
        chunk=chunk,
    )
    for xb, both in zip(xbs, got, strict=True):
        sims, sims_centred = unit(xa) @ unit(xb).T, centred(xa) @ centred(xb).T  # [N, N]
        full = {"cosine": sims, "margin": margin_matrix(sims, k), "centred": sims_centred}
        for metric, scores in full.items():
            assert both["a->b"][metric] == pytest.approx(tie_aware_accuracy(scores).item(), abs=1e-6), metric
            assert both["b->a"][metric] == pytest.approx(tie_aware_accuracy(scores.T).item(), abs=1e-6), metric
        n = len(rows)
        assert both["a->b"]["cos_pos"] == pytest.approx(sims.diagonal().mean().item(), abs=1e-6)
        neg = (sims.sum() - sims.diagonal().sum()) / (n * n - n)
        assert both["b->a"]["cos_neg"] == pytest.approx(neg.item(), abs=1e-6)
