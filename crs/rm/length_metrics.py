"""How much of a scorer's agreement with pairwise preferences is reply length, and what it knows beyond length.

A *scorer* (a reward model, a combination of them, the length itself) gives one number per
reply; a *judge* (people's ranks, a gold judge, an external judge's verdicts) prefers one reply
of each pair of replies to the same prompt. Every pair lies in a *cluster* (a prompt, an oasst1
conversation tree): pairs of one cluster share replies and labellers, so they are not
independent. Per scorer this module measures:

* **accuracy** on every pair the judge decided; on the pairs where the preferred reply is the
  **shorter** one (a scorer that only prefers the longer reply gets 0 there by construction);
  and on the **length-matched** pairs (:func:`length_matched`, within :data:`LENGTH_BAND`);
* the **rank correlation with length**: Spearman of the scorer's values with the replies'
  lengths in characters, every reply once (:func:`crs.rm.metrics.spearman`);
* **information beyond length** (:func:`information_beyond_length`): a logistic regression of
  the preference on AlpacaEval's length term alone, then with the scorer's difference added.

Conventions, the same for every caller:

* A pair is (first, second) with the judge's ``outcome`` for the first reply: above 0.5 the first
  is preferred, below 0.5 the second, exactly 0.5 is a judge tie. A judge tie carries no
  preference: it is left out of every metric here and only counted (``n_judge_ties``). A
  weighted verdict counts on its side.
* A scorer tie (two values within ``tie_eps``) earns half credit, as every pairwise accuracy in
  crs does (:func:`crs.rm.metrics.ranking_metrics`, the best-of-n agreement).
* *Shorter preferred*: the preferred reply has strictly fewer characters; a pair of equal
  lengths is in no such subset, and is length-matched.
* Intervals of the accuracies and of the correlation come from the caller's bootstrap over
  clusters, given as the (rounds, clusters) multiplicities of its draws
  (:func:`bootstrap_rounds`), so they pair with every other number the caller resamples.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from statistics import NormalDist

import numpy as np

from crs.rm.metrics import spearman

LENGTH_BAND = 0.10
"""Two replies are *of matched length* when ``|len_a - len_b| <= LENGTH_BAND * max(len_a, len_b)``."""

RIDGE = 1e-3
"""The penalty ``RIDGE / 2 * coef^2`` on every coefficient of :func:`information_beyond_length`'s fits: it keeps a
fit finite when a scorer separates the preferences (the judge itself) and moves nothing measurable otherwise (a
pair adds up to 1/4 to the curvature, so a few pairs outweigh it)."""

CV_FOLDS = 5
"""Folds of clusters for the held-out log-loss (fewer when there are fewer clusters)."""

SUBSETS = ("accuracy", "shorter_preferred_accuracy", "length_matched_accuracy")
"""The pair subsets an accuracy is reported on: every decided pair, shorter preferred, length-matched."""


def length_matched(lengths_a: np.ndarray, lengths_b: np.ndarray, band: float = LENGTH_BAND) -> np.ndarray:
    """Which pairs of replies have matched length: ``|a - b| <= band * max(a, b)`` (two empty replies match)."""
    return np.abs(lengths_a - lengths_b) <= band * np.maximum(lengths_a, lengths_b)


def reply_lengths(replies: Sequence[str]) -> np.ndarray:
    """The length of every reply in characters (as AlpacaEval counts them), as floats."""
    return np.array([len(reply) for reply in replies], dtype=float)


@dataclass(frozen=True)
class Preferences:
    """The judge's decided pairs over a set of replies (build with :func:`preferences`).

    ``lengths`` and ``reply_cluster`` have one entry per reply (R,); ``first``, ``second`` (reply
    indices) and ``first_preferred`` one per decided pair (N,); judge ties are only counted.
    """

    lengths: np.ndarray
    reply_cluster: np.ndarray
    first: np.ndarray
    second: np.ndarray
    first_preferred: np.ndarray
    n_clusters: int
    n_judge_ties: int

    @property
    def n_pairs(self) -> int:
        """Decided pairs."""
        return int(self.first.size)

    @property
    def pair_cluster(self) -> np.ndarray:
        """(N,) the cluster of each decided pair."""
        return self.reply_cluster[self.first]

    def length_difference(self) -> np.ndarray:
        """(N,) first reply's length minus the second's."""
        return self.lengths[self.first] - self.lengths[self.second]


def preferences(
    lengths: Sequence[float],
    clusters: Sequence[int],
    first: Sequence[int],
    second: Sequence[int],
    outcomes: Sequence[float],
    n_clusters: int | None = None,
) -> Preferences:
    """Check and hold a judge's pairwise preferences.

    ``lengths`` (characters) and ``clusters`` (an index in ``range(n_clusters)``; default: one
    more than the largest) per reply; ``first``, ``second`` (reply indices of the same cluster)
    and ``outcomes`` (the judge's verdict for ``first``, in [0, 1]; 0.5 a tie) per pair.
    """
    lengths_array, cluster_array = np.asarray(lengths, dtype=float), np.asarray(clusters, dtype=int)
    a, b = np.asarray(first, dtype=int), np.asarray(second, dtype=int)
    verdicts = np.asarray(outcomes, dtype=float)
    if lengths_array.shape != cluster_array.shape or lengths_array.ndim != 1:
        raise ValueError(f"one length and one cluster per reply: {lengths_array.shape} vs {cluster_array.shape}")
    if not (a.shape == b.shape == verdicts.shape) or a.ndim != 1:
        raise ValueError(f"one first, second and outcome per pair: {a.shape}, {b.shape}, {verdicts.shape}")
    if np.any(~np.isfinite(lengths_array)) or np.any(lengths_array < 0):
        raise ValueError("reply lengths must be finite and non-negative")
    if np.any(~np.isfinite(verdicts)) or np.any((verdicts < 0) | (verdicts > 1)):
        raise ValueError("outcomes must lie in [0, 1] (0.5: a tie)")
    if a.size and (min(a.min(), b.min()) < 0 or max(a.max(), b.max()) >= lengths_array.size):
        raise ValueError(f"a pair names a reply outside 0..{lengths_array.size - 1}")
    n_clusters = int(cluster_array.max()) + 1 if n_clusters is None and cluster_array.size else n_clusters or 0
    if cluster_array.size and (cluster_array.min() < 0 or cluster_array.max() >= n_clusters):
        raise ValueError(f"cluster indices must lie in 0..{n_clusters - 1}")
    if np.any(cluster_array[a] != cluster_array[b]):
        raise ValueError("both replies of a pair must lie in the same cluster")
    decided = verdicts != 0.5
    return Preferences(
        lengths_array,
        cluster_array,
        a[decided],
        b[decided],
        verdicts[decided] > 0.5,
        n_clusters,
        int((~decided).sum()),
    )


def _scores(prefs: Preferences, scores: Sequence[float]) -> np.ndarray:
    values = np.asarray(scores, dtype=float)
    if values.shape != prefs.lengths.shape:
        raise ValueError(f"one score per reply: {values.shape[0] if values.ndim else 0} for {prefs.lengths.size}")
    if not np.all(np.isfinite(values)):
        raise ValueError("scores contain NaN or infinite values")
    return values


def pair_credit(prefs: Preferences, scores: Sequence[float], tie_eps: float = 0.0) -> np.ndarray:
    """(N,) per decided pair: 1 when the scorer puts the preferred reply higher, 0.5 on a scorer tie
    (values within ``tie_eps``), else 0."""
    values = _scores(prefs, scores)
    diff = values[prefs.first] - values[prefs.second]
    right = np.where(prefs.first_preferred, diff > 0, diff < 0)
    return np.where(np.abs(diff) <= tie_eps, 0.5, right.astype(float))


def subset_masks(prefs: Preferences, band: float = LENGTH_BAND) -> dict[str, np.ndarray]:
    """(N,) masks of the decided pairs in each of :data:`SUBSETS`."""
    la, lb = prefs.lengths[prefs.first], prefs.lengths[prefs.second]
    preferred, other = np.where(prefs.first_preferred, la, lb), np.where(prefs.first_preferred, lb, la)
    return {
        "accuracy": np.ones(prefs.n_pairs, dtype=bool),
        "shorter_preferred_accuracy": preferred < other,
        "length_matched_accuracy": length_matched(la, lb, band),
    }


def subset_counts(prefs: Preferences, band: float = LENGTH_BAND) -> dict[str, int]:
    """How many pairs each accuracy is computed on (the same for every scorer), and the judge's ties."""
    masks = subset_masks(prefs, band)
    return {
        "n_pairs": prefs.n_pairs,
        "n_shorter_preferred": int(masks["shorter_preferred_accuracy"].sum()),
        "n_length_matched": int(masks["length_matched_accuracy"].sum()),
        "n_judge_ties": prefs.n_judge_ties,
    }


def bootstrap_rounds(
    prefs: Preferences,
    scores: Sequence[float],
    counts: np.ndarray | None = None,
    tie_eps: float = 0.0,
    band: float = LENGTH_BAND,
) -> dict[str, tuple[float | None, np.ndarray]]:
    """Point value and bootstrap rounds of each accuracy (:data:`SUBSETS`) and of ``length_spearman``.

    ``counts`` (B, C): how often each cluster is drawn in each of the caller's B bootstrap rounds
    (None: no rounds). An accuracy's round is the pooled credit of the drawn clusters' pairs over
    their number (NaN when a round draws no pair of the subset); the correlation's round is
    Spearman over the drawn clusters' replies, each as often as its cluster. A point value with
    nothing to compute on is None.
    """
    values = _scores(prefs, scores)
    counts = np.zeros((0, prefs.n_clusters)) if counts is None else np.asarray(counts, dtype=float)
    if counts.ndim != 2 or counts.shape[1] != prefs.n_clusters:
        raise ValueError(f"counts must be (rounds, {prefs.n_clusters} clusters), got shape {counts.shape}")
    credit = pair_credit(prefs, values, tie_eps)
    out: dict[str, tuple[float | None, np.ndarray]] = {}
    for name, mask in subset_masks(prefs, band).items():
        totals = np.bincount(prefs.pair_cluster, weights=credit * mask, minlength=prefs.n_clusters)
        sizes = np.bincount(prefs.pair_cluster, weights=mask.astype(float), minlength=prefs.n_clusters)
        with np.errstate(invalid="ignore", divide="ignore"):  # a round without a pair of the subset: NaN
            rounds = (counts @ totals) / (counts @ sizes)
        out[name] = (float(totals.sum() / sizes.sum()) if sizes.sum() else None, rounds)
    out["length_spearman"] = (spearman(values, prefs.lengths), _spearman_rounds(values, prefs, counts))
    return out


def _weighted_average_ranks(x: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """(B, R) ranks of ``x`` (R,) in the sample that holds value k ``weights[b, k]`` times: ties share the mean of
    their positions, as :func:`crs.rm.metrics.average_ranks` gives on that sample written out."""
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    new_value = np.concatenate([[True], sorted_x[1:] != sorted_x[:-1]])  # where each tie group begins
    starts, group = np.flatnonzero(new_value), np.cumsum(new_value) - 1
    group_weight = np.add.reduceat(weights[:, order], starts, axis=1)
    mean_position = np.cumsum(group_weight, axis=1) - group_weight + (group_weight - 1.0) / 2.0
    ranks = np.empty_like(weights, dtype=float)
    ranks[:, order] = mean_position[:, group]
    return ranks


def _spearman_rounds(values: np.ndarray, prefs: Preferences, counts: np.ndarray) -> np.ndarray:
    """Spearman of ``values`` with the replies' lengths in each round, over the drawn clusters' replies (each as
    often as its cluster is drawn): the weighted Pearson of weighted ranks, so no round writes its sample out; NaN
    where a side is constant. Rounds go in chunks, to keep (chunk, replies) arrays small."""
    out = np.full(counts.shape[0], np.nan)
    if values.size == 0:
        return out
    chunk = max(1, 2_000_000 // values.size)
    for start in range(0, counts.shape[0], chunk):
        weights = counts[start : start + chunk][:, prefs.reply_cluster]
        x, y = _weighted_average_ranks(values, weights), _weighted_average_ranks(prefs.lengths, weights)
        total = weights.sum(axis=1, keepdims=True)
        with np.errstate(invalid="ignore", divide="ignore"):
            x = x - (weights * x).sum(axis=1, keepdims=True) / total
            y = y - (weights * y).sum(axis=1, keepdims=True) / total
            var_x, var_y = (weights * x * x).sum(axis=1), (weights * y * y).sum(axis=1)
            rho = (weights * x * y).sum(axis=1) / np.sqrt(var_x * var_y)
        # A constant side (variance at rounding level) has no correlation, as spearman says None.
        constant = (var_x <= 1e-12 * total[:, 0] ** 3) | (var_y <= 1e-12 * total[:, 0] ** 3) | (total[:, 0] < 2)
        out[start : start + chunk] = np.where(constant, np.nan, rho)
    return out


# ---------------------------------------------------------------------------------------------- logistic regression


def _sigmoid(eta: np.ndarray) -> np.ndarray:
    return np.exp(-np.logaddexp(0.0, -eta))  # no overflow for large |eta|


def log_likelihood(
    design: np.ndarray, outcomes: np.ndarray, coef: np.ndarray, weights: np.ndarray | None = None
) -> float:
    """Bernoulli log-likelihood of ``P(y = 1) = sigmoid(design @ coef)`` (fractional outcomes allowed)."""
    eta = design @ coef
    terms = outcomes * eta - np.logaddexp(0.0, eta)
    return float(np.sum(terms if weights is None else weights * terms))


def fit_logistic(
    design: np.ndarray,
    outcomes: np.ndarray,
    weights: np.ndarray | None = None,
    ridge: float | Sequence[float] = 0.0,
    max_iter: int = 100,
) -> np.ndarray:
    """Weighted logistic regression ``P(y = 1) = sigmoid(design @ coef)`` by Newton's method; returns ``coef``.

    Maximises the log-likelihood minus ``ridge_k / 2 * coef_k^2`` (``ridge``: one value, or one per
    column of ``design``); outcomes may be fractional (a weighted verdict). A step that would lower
    the objective is halved until it does not (Newton overshoots when the data nearly separate).
    """
    x, y = np.asarray(design, dtype=float), np.asarray(outcomes, dtype=float)
    w = np.ones(y.size) if weights is None else np.asarray(weights, dtype=float)
    penalty = np.broadcast_to(np.asarray(ridge, dtype=float), (x.shape[1],))

    def objective(c: np.ndarray) -> float:
        return log_likelihood(x, y, c, w) - 0.5 * float(penalty @ (c * c))

    coef = np.zeros(x.shape[1])
    current = objective(coef)
    for _ in range(max_iter):
        p = _sigmoid(x @ coef)
        gradient = x.T @ (w * (y - p)) - penalty * coef
        hessian = (x.T * (w * p * (1.0 - p))) @ x + np.diag(penalty)
        try:
            step = np.linalg.solve(hessian, gradient)
        except np.linalg.LinAlgError:  # a column without information and no penalty on it
            step = np.linalg.pinv(hessian) @ gradient
        for _ in range(40):
            trial = objective(coef + step)
            if trial >= current:
                break
            step = step / 2.0
        else:
            break  # no step uphill is left: converged up to rounding
        coef, current = coef + step, trial
        if np.abs(step).max() < 1e-9:
            break
    return coef


def cluster_robust_covariance(
    design: np.ndarray, outcomes: np.ndarray, coef: np.ndarray, clusters: np.ndarray
) -> np.ndarray | None:
    """The cluster-robust (sandwich) covariance of a logistic fit's coefficients, or None below 2 clusters.

    ``H^-1 (sum over clusters of s_g s_g') H^-1`` with ``H`` the information matrix and ``s_g`` the
    sum of the cluster's score vectors ``x_i (y_i - p_i)``, times ``G / (G - 1) * (N - 1) / (N - K)``
    (G clusters, N rows, K coefficients: the usual small-sample factor). Pairs of one cluster may
    depend on each other in any way; clusters are taken as independent.
    """
    _, index = np.unique(clusters, return_inverse=True)
    n_groups, (n, k) = int(index.max()) + 1 if index.size else 0, design.shape
    if n_groups < 2 or n <= k:
        return None
    p = _sigmoid(design @ coef)
    sums = np.zeros((n_groups, k))
    np.add.at(sums, index, design * (outcomes - p)[:, None])
    bread = np.linalg.pinv((design.T * (p * (1.0 - p))) @ design)
    factor = n_groups / (n_groups - 1) * (n - 1) / (n - k)
    return factor * bread @ (sums.T @ sums) @ bread


def _rms(values: np.ndarray) -> float:
    return float(np.sqrt(np.mean(values**2))) if values.size else 0.0


def length_term(length_diff: np.ndarray, scale: float | None = None) -> np.ndarray:
    """AlpacaEval's length term ``tanh(d / s)``: ``d`` a length difference, ``s`` (default) its root mean square
    (no centring, so a pair written the other way round only flips the sign); zeros when every ``d`` is 0."""
    s = _rms(length_diff) if scale is None else scale
    return np.tanh(length_diff / s) if s > 0 else np.zeros_like(length_diff, dtype=float)


def _design(length_diff: np.ndarray, score_diff: np.ndarray | None, scales: tuple[float, float]) -> np.ndarray:
    """Columns: the length term; with ``score_diff``, the scorer's difference over its root mean square."""
    columns = [length_term(length_diff, scales[0])]
    if score_diff is not None:
        columns.append(score_diff / scales[1] if scales[1] > 0 else np.zeros_like(score_diff))
    return np.column_stack(columns)


@dataclass(frozen=True)
class BeyondLength:
    """What :func:`information_beyond_length` found; None where a number is undefined on the data.

    ``lr``, ``p_lr``: the likelihood-ratio test, pairs taken as independent (naive). ``coef``: the
    scorer's coefficient (log-odds per root mean square of its difference), ``length_coef`` the
    length term's beside it; ``se_robust``, ``ci_low``, ``ci_high``, ``p_robust``: the
    cluster-robust Wald interval and test of ``coef``. ``cv_log_loss_length``,
    ``cv_log_loss_with_scorer``: held-out log-loss per pair of each model, ``cv_folds`` folds of
    whole clusters (0: too few clusters to hold any out).
    """

    n_pairs: int
    n_clusters: int
    lr: float | None
    p_lr: float | None
    coef: float | None
    ci_low: float | None
    ci_high: float | None
    se_robust: float | None
    p_robust: float | None
    length_coef: float | None
    cv_log_loss_length: float | None
    cv_log_loss_with_scorer: float | None
    cv_folds: int

    def as_dict(self) -> dict[str, float | int | None]:
        """Plain-dict form (JSON-serialisable)."""
        return asdict(self)


def information_beyond_length(
    prefs: Preferences,
    scores: Sequence[float],
    alpha: float = 0.05,
    folds: int = CV_FOLDS,
    seed: int = 0,
    ridge: float = RIDGE,
) -> BeyondLength:
    """Does the scorer predict the judge's preferences beyond what reply length predicts?

    Two logistic models of "the first reply is preferred" over the decided pairs: the length model
    ``sigmoid(b * tanh(d / s))`` (:func:`length_term`: ``d`` the length difference, ``s`` its root
    mean square) and the same plus ``c * z``, ``z`` the scorer's difference over its root mean
    square. Neither has an intercept: which reply a pair lists first means nothing, and without one
    a pair written the other way round (``y``, ``d``, ``z`` all flipped) fits the same.

    * ``lr = 2 (loglik with scorer - loglik of length alone)`` and ``p_lr = erfc(sqrt(lr / 2))``
      (chi-square, 1 degree of freedom) treat the pairs as independent. They are not when a
      cluster holds several pairs (K replies to one prompt give K(K-1)/2 pairs; a tree shares its
      labellers), so this p-value is too small by an unknown amount: read it as the naive test.
    * ``coef`` with ``ci_low``/``ci_high`` (Wald, ``1 - alpha``) and ``p_robust`` use the
      cluster-robust standard error (:func:`cluster_robust_covariance`): the test that respects
      clusters. A scorer carries information beyond length when ``p_robust`` is small, i.e. the
      interval excludes 0 (with few clusters, under about 30, even it is optimistic).
    * ``cv_log_loss_*``: both models fitted on all but one fold of clusters (clusters assigned to
      folds at random from ``seed``; scales from the training folds) and scored on the held-out
      fold, mean log-loss per pair over every fold. Lower is better; the scorer helps out of
      sample when ``cv_log_loss_with_scorer`` is below ``cv_log_loss_length``.

    Both fits carry the tiny :data:`RIDGE` penalty. A scorer with no spread over the pairs adds
    nothing: ``lr`` 0, ``p_lr`` 1, no coefficient.
    """
    values = _scores(prefs, scores)
    y = prefs.first_preferred.astype(float)
    length_diff, score_diff = prefs.length_difference(), values[prefs.first] - values[prefs.second]
    clusters = prefs.pair_cluster
    cv = _cross_validated_log_loss(y, length_diff, score_diff, clusters, folds, seed, ridge)
    n_clusters = int(np.unique(clusters).size)
    scales = (_rms(length_diff), _rms(score_diff))
    if prefs.n_pairs == 0 or scales[1] == 0:
        no_test = (None, None) if prefs.n_pairs == 0 else (0.0, 1.0)
        return BeyondLength(prefs.n_pairs, n_clusters, *no_test, None, None, None, None, None, None, *cv)
    base, full = _design(length_diff, None, scales), _design(length_diff, score_diff, scales)
    base_coef, full_coef = fit_logistic(base, y, ridge=ridge), fit_logistic(full, y, ridge=ridge)
    lr = max(0.0, 2.0 * (log_likelihood(full, y, full_coef) - log_likelihood(base, y, base_coef)))
    covariance = cluster_robust_covariance(full, y, full_coef, clusters)
    se = math.sqrt(max(float(covariance[1, 1]), 0.0)) if covariance is not None else None
    coef = float(full_coef[1])
    if se:
        half = NormalDist().inv_cdf(1.0 - alpha / 2.0) * se
        robust = (coef - half, coef + half, se, math.erfc(abs(coef / se) / math.sqrt(2.0)))
    else:
        robust = (None, None, se, None)
    return BeyondLength(
        prefs.n_pairs, n_clusters, lr, math.erfc(math.sqrt(lr / 2.0)), coef, *robust, float(full_coef[0]), *cv
    )


def _cross_validated_log_loss(
    y: np.ndarray,
    length_diff: np.ndarray,
    score_diff: np.ndarray,
    clusters: np.ndarray,
    folds: int,
    seed: int,
    ridge: float,
) -> tuple[float | None, float | None, int]:
    """(held-out log-loss per pair of the length model, of the model with the scorer, folds used)."""
    present = np.unique(clusters)
    n_folds = min(folds, present.size)
    if n_folds < 2:
        return None, None, 0
    fold_of = np.zeros(int(present.max()) + 1, dtype=int)
    fold_of[np.random.default_rng(seed).permutation(present)] = np.arange(present.size) % n_folds
    fold = fold_of[clusters]
    losses = np.zeros(2)
    for held in range(n_folds):
        train, test = fold != held, fold == held
        scales = (_rms(length_diff[train]), _rms(score_diff[train]))
        for column, diff in enumerate((None, score_diff)):
            fitted = fit_logistic(
                _design(length_diff[train], None if diff is None else diff[train], scales), y[train], ridge=ridge
            )
            held_out = _design(length_diff[test], None if diff is None else diff[test], scales)
            losses[column] -= log_likelihood(held_out, y[test], fitted)
    return float(losses[0] / y.size), float(losses[1] / y.size), n_folds
