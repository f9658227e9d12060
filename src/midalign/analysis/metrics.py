"""Cross-lingual alignment metrics on pooled sentence vectors. Pure tensor functions.

For two languages a and b with N aligned sentences each (row i of `x` translates row i of `y`):

- `cosine` retrieval: is `y_i` the nearest neighbour of `x_i` among all of `y` by cosine similarity?
- `margin` retrieval: the same with the ratio margin of Artetxe & Schwenk (2019), k nearest neighbours:
  `margin(x, y) = cos(x, y) / (sum_{z in NN_k(x)} cos(x, z) / 2k + sum_{z in NN_k(y)} cos(y, z) / 2k)`,
  where NN_k(x) are x's k nearest among the other language's sentences.
- `centred` retrieval: cosine after subtracting each language's mean vector (tiny and anisotropic models
  have a large shared component that raw cosine mostly measures).
- `cos_pos` / `cos_neg`: mean cosine of translations / of non-translations.

A tie for the nearest neighbour gets fractional credit, `1 / (number of candidates tied at the top)` when
the translation is among them. Accuracy is then its expected value under random tie-breaking. Degenerate
vectors (all equal) score chance, not 100%, and duplicate sentences are scored fairly.

One similarity matrix serves both directions: a->b reads its rows, b->a its columns. The margin
denominator is symmetric in (x, y), so the b->a margin matrix is the transpose of the a->b one.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

METRICS = ("cosine", "margin", "centred", "cos_pos", "cos_neg")


def tie_aware_accuracy(scores: torch.Tensor) -> torch.Tensor:
    """Row-wise nearest-neighbour accuracy of a square score matrix whose diagonal holds the true pairs.

    Args:
        scores: `[N, N]`, row i = query i scored against every candidate.

    Returns:
        Scalar: mean over rows of `[s_ii == max_j s_ij] / #{j : s_ij == max_j s_ij}`.
    """
    best = scores.max(dim=1, keepdim=True).values  # [N, 1]
    at_top = scores == best  # [N, N]
    gold_at_top = at_top.diagonal()  # [N]
    return (gold_at_top.float() / at_top.sum(dim=1).float()).mean()


def margin_matrix(sims: torch.Tensor, k: int = 4) -> torch.Tensor:
    """Ratio-margin scores from a cosine matrix `sims[i, j] = cos(x_i, y_j)`; `[N, M] -> [N, M]`."""
    k_rows, k_cols = min(k, sims.shape[1]), min(k, sims.shape[0])
    knn_x = sims.topk(k_rows, dim=1).values.mean(dim=1)  # [N]: mean cos of x_i to its k nearest y
    knn_y = sims.topk(k_cols, dim=0).values.mean(dim=0)  # [M]: mean cos of y_j to its k nearest x
    return sims / ((knn_x[:, None] + knn_y[None, :]) / 2)  # [N, M]


def _accuracy(gold: torch.Tensor, scores: torch.Tensor, dim: int) -> torch.Tensor:
    """Tie-aware accuracy per block, counting ties in full (the path taken when a tie occurs).

    Args:
        gold: `[M, N]` score of each query with its translation.
        scores: `[M, N, N]` with the diagonal at -inf; queries along the other axis than `dim`.
        dim: the candidate axis (2: queries are rows, 1: queries are columns).

    Returns:
        `[M]` accuracies.
    """
    best_other = scores.amax(dim=dim)  # [M, N]: best wrong candidate of each query
    tied = (scores == gold.unsqueeze(dim)).sum(dim=dim).float()  # [M, N] wrong candidates level with gold
    credit = torch.where(gold > best_other, 1.0, torch.where(gold == best_other, 1.0 / (1.0 + tied), 0.0))
    return credit.mean(dim=1)


def _accuracies(gold, row_best, col_best, full_scores) -> tuple[torch.Tensor, torch.Tensor]:
    """Both directions' accuracies from the wrong candidates' maxima; ties are counted only when one occurs."""
    if bool((gold == row_best).any() or (gold == col_best).any()):
        scores = full_scores()
        return _accuracy(gold, scores, 2), _accuracy(gold, scores, 1)
    return (gold > row_best).float().mean(dim=1), (gold > col_best).float().mean(dim=1)


def _best_wrong(values: torch.Tensor, indices: torch.Tensor, gold_index: torch.Tensor, dim: int) -> torch.Tensor:
    """Largest entry whose index is not the translation's, from a top-k (k >= 2) along `dim`; -inf if none.

    The best wrong candidate is within the top 2 (only one index is the translation's), so the top-k the margin
    needs also gives the cosine's maxima without another pass over the matrix.
    """
    wrong = indices != gold_index  # the translation is at most one of the k
    return values.masked_fill(~wrong, -torch.inf).amax(dim=dim)


def _scan(scores: torch.Tensor, chunk: int, k: int = 0) -> dict[str, torch.Tensor]:
    """Everything the metrics read from `scores` `[M, N, N]`, in one pass over cache-sized row chunks.

    Returns `[M, N]` tensors: `row_best`, `col_best`, the maxima of the wrong candidates per row (query in a)
    and per column (query in b). With `k > 0` (the raw cosines), also `half_x`, `half_y`: half the mean of each
    row's and each column's k largest entries (the translation included, as the margin defines), and
    `margin_row_best`, `margin_col_best`: the wrong candidates' maxima of the margin
    `scores / (half_x[i] + half_y[j])`.

    With `k > 0`, `row_best` and `col_best` come from the same top-k (taken with at least 2 entries) and `scores`
    is left as it is; the margin is computed from each chunk while it is in cache (no `[M, N, N]` margin
    matrix). With `k == 0`, the diagonal of `scores` is set to -inf in place and the maxima are taken directly.
    """
    m, n, _ = scores.shape
    rows = torch.arange(n)
    out = {"row_best": torch.empty(m, n), "col_best": torch.full((m, n), -torch.inf)}
    if k:
        top = min(max(k, 2), n)
        # Columns in one call: a running top-k merged chunk by chunk costs several times more.
        values, indices = scores.topk(top, dim=1)  # [M, top, N]: the a sentences nearest each b sentence
        out["half_y"] = values[:, : min(k, n)].mean(dim=1) / 2  # [M, N]
        out["col_best"] = _best_wrong(values, indices, rows[None, None, :], dim=1)  # [M, N]
        out["half_x"] = torch.empty(m, n)
        out["margin_row_best"], out["margin_col_best"] = torch.empty(m, n), torch.full((m, n), -torch.inf)
    for r0 in range(0, n, chunk):
        r1 = min(r0 + chunk, n)
        part = scores[:, r0:r1, :]  # [M, r, N] view
        if not k:
            part[:, :, r0:r1].diagonal(dim1=1, dim2=2).fill_(-torch.inf)
            out["row_best"][:, r0:r1] = part.amax(dim=2)
            torch.maximum(out["col_best"], part.amax(dim=1), out=out["col_best"])
            continue
        values, indices = part.topk(top, dim=2)  # [M, r, top]
        half_x = values[:, :, : min(k, n)].mean(dim=2) / 2  # [M, r]
        out["half_x"][:, r0:r1] = half_x
        out["row_best"][:, r0:r1] = _best_wrong(values, indices, rows[None, r0:r1, None], dim=2)
        margins = part / (half_x[:, :, None] + out["half_y"][:, None, :])  # [M, r, N]
        margins[:, :, r0:r1].diagonal(dim1=1, dim2=2).fill_(-torch.inf)
        out["margin_row_best"][:, r0:r1] = margins.amax(dim=2)
        torch.maximum(out["margin_col_best"], margins.amax(dim=1), out=out["margin_col_best"])
    return out


def block_metrics(
    xa: torch.Tensor, xb: torch.Tensor, ca: torch.Tensor, cb: torch.Tensor, *, k: int = 4, chunk: int = 64
) -> list[dict[str, dict[str, float]]]:
    """Metrics between one language a and M languages b at once (both directions).

    Args:
        xa: `[N, H]` unit vectors of a; xb: `[M, N, H]` unit vectors of the b languages.
        ca, cb: the same after centring on each language's mean (then normalised).
        k: neighbours in the margin.
        chunk: rows per chunk of the element-wise passes (sized to stay in cache).

    Returns:
        One `{"a->b": {metric: value}, "b->a": {...}}` per b language.
    """
    n = xa.shape[0]
    sims = torch.matmul(xa, xb.transpose(1, 2))  # [N, H] @ [M, H, N] -> [M, N, N]; rows a, columns b
    gold = sims.diagonal(dim1=1, dim2=2).clone()  # [M, N]
    cos_pos = gold.mean(dim=1)  # [M]
    # The sum of all cosines is (sum of a's vectors) . (sum of b's vectors): no pass over the matrix.
    total = torch.matmul(xb.sum(dim=1), xa.sum(dim=0))  # [M, H] @ [H] -> [M]
    cos_neg = (total - gold.sum(dim=1)) / max(n * n - n, 1)  # [M]
    scan = _scan(sims, chunk, k)
    half_x, half_y = scan["half_x"], scan["half_y"]  # the margin's denominator is half_x[i] + half_y[j]
    gold_margin = gold / (half_x + half_y)

    def masked_sims() -> torch.Tensor:
        sims.diagonal(dim1=1, dim2=2).fill_(-torch.inf)
        return sims

    def full_margins() -> torch.Tensor:
        margins = sims / (half_x.unsqueeze(2) + half_y.unsqueeze(1))  # [M, N, N]
        margins.diagonal(dim1=1, dim2=2).fill_(-torch.inf)
        return margins

    results = {
        "cosine": _accuracies(gold, scan["row_best"], scan["col_best"], masked_sims),
        "margin": _accuracies(gold_margin, scan["margin_row_best"], scan["margin_col_best"], full_margins),
    }
    centred = torch.matmul(ca, cb.transpose(1, 2))  # [M, N, N]
    gold_centred = centred.diagonal(dim1=1, dim2=2).clone()
    scan = _scan(centred, chunk)  # centred now has -inf on its diagonal
    results["centred"] = _accuracies(gold_centred, scan["row_best"], scan["col_best"], lambda: centred)
    out = []
    for m in range(xb.shape[0]):
        per = {}
        for name, direction in (("a->b", 0), ("b->a", 1)):
            per[name] = {metric: values[direction][m].item() for metric, values in results.items()}
            per[name]["cos_pos"] = cos_pos[m].item()
            per[name]["cos_neg"] = cos_neg[m].item()
        out.append(per)
    return out


def _unit(v: torch.Tensor) -> torch.Tensor:
    return F.normalize(v.float(), dim=-1)


def pair_metrics(x: torch.Tensor, y: torch.Tensor, *, k: int = 4, mean_x=None, mean_y=None) -> dict:
    """All metrics for both directions between two languages.

    Args:
        x: `[N, H]` sentences of language a; y: `[N, H]` their translations in language b.
        k: neighbours in the margin.
        mean_x, mean_y: language mean vectors for centring (default: the means of `x` and `y`).

    Returns:
        `{"a->b": {metric: value}, "b->a": {metric: value}}` with Python floats.
    """
    if x.shape != y.shape or x.dim() != 2:
        raise ValueError(f"expected two [N, H] tensors of the same shape, got {tuple(x.shape)}, {tuple(y.shape)}")
    mx = x.float().mean(0) if mean_x is None else mean_x.float()
    my = y.float().mean(0) if mean_y is None else mean_y.float()
    (out,) = block_metrics(_unit(x), _unit(y)[None], _unit(x.float() - mx), _unit(y.float() - my)[None], k=k)
    return out


def layer_metrics(
    vectors: dict[str, torch.Tensor], *, k: int = 4, pivot: str | None = None, block_elements: int = 2**23
) -> dict[tuple[str, str], dict[str, float]]:
    """Metrics of every ordered language pair at one layer (or only pairs with `pivot` on one side).

    One similarity matrix per unordered pair serves both directions. The languages paired with a source are
    processed in blocks of at most `block_elements` similarities, to bound memory.

    Args:
        vectors: `{language: [N, H]}`, all aligned by row.

    Returns:
        `{(src, tgt): {metric: value}}`.
    """
    langs = sorted(vectors)
    unit = {lang: _unit(v) for lang, v in vectors.items()}
    centred = {lang: _unit(v.float() - v.float().mean(0)) for lang, v in vectors.items()}
    n = next(iter(vectors.values())).shape[0]
    per_block = max(1, block_elements // max(n * n, 1))
    out: dict[tuple[str, str], dict[str, float]] = {}
    for i, a in enumerate(langs):
        partners = [b for b in langs[i + 1 :] if pivot is None or pivot in (a, b)]
        for start in range(0, len(partners), per_block):
            block = partners[start : start + per_block]
            xb = torch.stack([unit[b] for b in block])  # [M, N, H]
            cb = torch.stack([centred[b] for b in block])  # [M, N, H]
            for b, both in zip(block, block_metrics(unit[a], xb, centred[a], cb, k=k), strict=True):
                out[(a, b)], out[(b, a)] = both["a->b"], both["b->a"]
    return out
