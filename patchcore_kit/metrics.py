"""How well do anomaly scores and maps separate defects from nominal parts?

Three numbers, as in the PatchCore paper and the MVTec AD benchmark:

* **image AUROC** - one score per image against its label (1 = anomalous);
* **pixel AUROC** - every pixel of every anomaly map against the ground-truth masks;
* **AUPRO** - the area under the per-region-overlap curve up to a false positive rate of 0.3,
  divided by 0.3 (Bergmann et al., *The MVTec Anomaly Detection Dataset*, IJCV 2021). Pixel
  AUROC is dominated by large defects; AUPRO weighs every connected defect region equally, so
  a missed small scratch costs as much as a missed large stain.

Pixel metrics need at least one defective pixel; without one they are ``None`` ("absent"),
never zero. All curves are exact: no threshold grid, no subsampling.

A sweep scores many models on one test set: :class:`PixelGroundTruth` labels the masks' defect
regions once and then gives both pixel metrics of a map stack from *one* sort of its nominal
scores (:meth:`PixelGroundTruth.metrics`), the same numbers as :func:`pixel_auroc` and
:func:`aupro`, which stay as the plain definitions.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage
from sklearn.metrics import roc_auc_score

from .errors import InputError

# Defect regions are 8-connected within an image, as in the MVTec AD evaluation code; the zero
# planes before and after keep regions of neighbouring images in a stack apart.
_EIGHT_CONNECTED_PER_IMAGE = np.zeros((3, 3, 3), dtype=bool)
_EIGHT_CONNECTED_PER_IMAGE[1] = True


def image_auroc(labels: Sequence[int], scores: Sequence[float]) -> float:
    """Area under the ROC curve of image scores (higher = more anomalous) against labels.

    >>> image_auroc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8])
    0.75
    """
    labels, scores = _check_image_inputs(labels, scores)
    if labels.min() == labels.max():
        kind = "anomalous" if labels[0] else "nominal"
        raise InputError(f"labels: all {labels.size} images are {kind}; AUROC needs both classes")
    return float(roc_auc_score(labels, scores))


class PixelGroundTruth:
    """The masks of a test set, prepared once for the pixel metrics of many anomaly-map stacks.

    ``masks`` (N, H, W) bool (or 0/1; a single (H, W) mask works too). Holds what depends only on
    the masks - which pixels are nominal, where the defective ones are and each one's weight in
    the per-region overlap - so that :meth:`metrics` only sorts scores: the same numbers as
    :func:`pixel_auroc` (bit for bit, an integer count) and :func:`aupro` (the same terms summed
    in another order, to about 1e-16).

    >>> truth = PixelGroundTruth(np.array([[[False, False, True, True]]]))
    >>> truth.metrics(np.array([[[0.1, 0.4, 0.35, 0.8]]], dtype=np.float32))
    (0.75, 0.5)
    """

    def __init__(self, masks: np.ndarray):
        masks, _ = _check_pixel_inputs(masks, np.broadcast_to(np.float32(0.0), np.shape(masks)))
        self.masks = masks
        regions, self.n_regions = ndimage.label(masks, structure=_EIGHT_CONNECTED_PER_IMAGE)
        pixels_per_region = np.bincount(regions.ravel(), minlength=self.n_regions + 1)
        self.n_nominal = int(pixels_per_region[0])
        self.n_defective = int(masks.size - self.n_nominal)
        self._is_nominal = ~masks.ravel()
        self._defective_at = np.flatnonzero(masks)
        # Flagging a defective pixel raises the PRO by 1 / (its region's size * n_regions): every
        # region weighs the same in the mean. The weights of all defective pixels sum to 1.
        region_of_defective = regions.ravel()[self._defective_at]
        self._pro_weight = 1.0 / (pixels_per_region[region_of_defective] * self.n_regions)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.masks.shape

    def metrics(self, maps: np.ndarray, max_fpr: float = 0.3) -> tuple[float | None, float | None]:
        """``(pixel AUROC, AUPRO up to max_fpr)`` of ``maps`` (N, H, W), float32 or float64.

        One sort of the nominal scores (and an argsort of the few defective ones) serves both
        metrics, no argsort of the whole stack. For each defective score ``d``, ``below`` and
        ``below_or_tied`` count the nominal scores ``< d`` and ``<= d``:

        * pixel AUROC = sum(below + below_or_tied) / (2 n_defective n_nominal), the Mann-Whitney
          count of :func:`pixel_auroc`, an exact integer;
        * AUPRO: going down the scores, only nominal pixels move the FPR, so the PRO curve's area
          lies over the tie groups of nominal scores. Over the group at score ``x`` (``c`` pixels)
          the FPR grows by ``c / n_nominal`` while the PRO goes from ``P(> x)`` to ``P(>= x)``,
          the summed weights ``w`` of the defective pixels scoring above (at least) ``x``: a
          trapezoid of ``c (P(> x) + P(>= x)) / (2 n_nominal)``. Summed over the groups and
          turned around, the area is a weighted Mann-Whitney count,
          ``sum(w (below + below_or_tied)) / (2 n_nominal)``, of the nominal pixels above the
          group that crosses ``max_fpr``; that group's trapezoid is cut at ``max_fpr``, its PRO
          there interpolated linearly, as :func:`aupro` closes the curve.
        """
        if not 0.0 < max_fpr <= 1.0:
            raise InputError(f"max_fpr: expected a number in (0, 1], got {max_fpr}")
        _, maps = _check_pixel_inputs(self.masks, maps)
        if self.n_defective == 0 or self.n_nominal == 0:
            return None, None
        scores = maps.ravel()
        nominal = scores[self._is_nominal]
        nominal.sort()  # in place: a vectorised sort, not an argsort, of 95 % of the pixels
        defective = scores[self._defective_at]
        order = np.argsort(defective)  # ascending queries keep the look-ups below cache-friendly
        defective, weight = defective[order], self._pro_weight[order]
        below = np.searchsorted(nominal, defective, side="left")
        below_or_tied = _below_or_tied(nominal, defective, below)
        count = below.sum(dtype=np.int64) + below_or_tied.sum(dtype=np.int64)
        auroc = float(count / (2.0 * self.n_defective * self.n_nominal))  # as pixel_auroc divides
        return auroc, self._aupro(nominal, defective, weight, below + below_or_tied, max_fpr)

    def _aupro(self, nominal, defective, weight, twice_ranks, max_fpr: float) -> float:
        # ``twice_ranks`` = below + below_or_tied of each defective score (both arrays ascending).
        n = self.n_nominal
        # The group that crosses max_fpr holds the (flagged + 1)-th highest nominal score. Should
        # rounding put flagged one off, the group found ends (or starts) exactly at max_fpr, and its
        # trapezoid cut there is the whole group's (or nothing): the same area.
        flagged = min(n, int(max_fpr * n))
        # Weighted sums with numpy's pairwise sum, not a BLAS dot: the same digits whatever the
        # thread count (a sweep on single-threaded Dask workers must equal the serial rows exactly).
        if flagged == n:  # max_fpr = 1: the whole curve, every nominal pixel
            return float(np.sum(weight * twice_ranks) / (2 * n) / max_fpr)
        cut = nominal[n - flagged - 1]  # the score of the tie group that crosses max_fpr
        nominal_under, nominal_upto = np.searchsorted(nominal, cut, "left"), np.searchsorted(nominal, cut, "right")
        at, above = np.searchsorted(defective, cut, "left"), np.searchsorted(defective, cut, "right")
        # The groups above the cut, whole: only the nominal pixels above it count for each d.
        area = np.sum(weight[above:] * (twice_ranks[above:] - 2 * nominal_upto)) / (2 * n)
        # The crossing group, from (its FPR, PRO) before to after it, up to max_fpr.
        fpr_before, fpr_after = (n - nominal_upto) / n, (n - nominal_under) / n
        pro_before, pro_after = weight[above:].sum(), weight[at:].sum()
        pro_at_max = np.interp(max_fpr, [fpr_before, fpr_after], [pro_before, pro_after])
        area += (max_fpr - fpr_before) * (pro_before + pro_at_max) / 2
        return float(area / max_fpr)


def _below_or_tied(nominal: np.ndarray, defective: np.ndarray, below: np.ndarray) -> np.ndarray:
    """How many ``nominal`` scores (ascending) are ``<= d`` for each ``defective`` score ``d``,
    given ``below``, the counts ``< d``. Only a ``d`` that some nominal score equals needs a
    second binary search: on real maps few do, and each search of the whole stack costs as much
    as the first (a branchy walk down 28 million scores per defective pixel)."""
    tied = np.flatnonzero(nominal[np.minimum(below, len(nominal) - 1)] == defective)
    below_or_tied = below.copy()
    below_or_tied[tied] = np.searchsorted(nominal, defective[tied], side="right")
    return below_or_tied


def _curve_from_ranking(scores, region_of, pro_step, n_nominal: int, max_fpr: float):
    """``(fpr, pro)`` of pixels ranked by descending score (ties adjacent), up to ``max_fpr``."""
    fpr = np.cumsum(region_of == 0) / n_nominal
    pro = np.cumsum(pro_step[region_of])
    # The curve is read only after the last pixel of each group of tied scores, so the order
    # within ties does not matter.
    last_of_tie = np.append(np.flatnonzero(scores[1:] != scores[:-1]), scores.size - 1)
    fpr = np.concatenate([[0.0], fpr[last_of_tie]])
    pro = np.concatenate([[0.0], pro[last_of_tie]])
    stop = np.searchsorted(fpr, max_fpr, side="right")  # fpr[:stop] <= max_fpr
    return fpr[: stop + 1], pro[: stop + 1]


def pixel_auroc(masks: np.ndarray, maps: np.ndarray) -> float | None:
    """ROC AUC of all pixels of the anomaly ``maps`` against the ground-truth ``masks``.

    ``masks`` (N, H, W) bool and ``maps`` (N, H, W) float; a single (H, W) pair works too.
    Returns ``None`` when there is no defective pixel (or no nominal one).

    This is the Mann-Whitney form of the AUROC: the chance that a random defective pixel scores
    above a random nominal one, ties counting half. It needs one sort of the nominal scores,
    which for millions of pixels is about ten times faster and leaner than
    ``sklearn.metrics.roc_auc_score`` while giving the same number.

    >>> masks = np.array([[[False, False, True, True]]])
    >>> maps = np.array([[[0.1, 0.4, 0.35, 0.8]]])
    >>> pixel_auroc(masks, maps)
    0.75
    """
    masks, maps = _check_pixel_inputs(masks, maps)
    defective = maps[masks]
    nominal = np.sort(maps[~masks])
    if defective.size == 0 or nominal.size == 0:
        return None
    # For each defective pixel: how many nominal pixels score below it, and below or equal.
    below = np.searchsorted(nominal, defective, side="left").sum(dtype=np.int64)
    below_or_tied = np.searchsorted(nominal, defective, side="right").sum(dtype=np.int64)
    return float((below + below_or_tied) / (2.0 * defective.size * nominal.size))


def pro_curve(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 1.0) -> tuple[np.ndarray, np.ndarray] | None:
    """The per-region-overlap curve: ``(fpr, pro)`` at every distinct threshold of ``maps``.

    For a threshold ``t`` a pixel is flagged when its score is above ``t``. ``fpr`` is the
    fraction of nominal pixels (outside every mask, over all images) that are flagged; ``pro`` is
    the mean, over all defect regions (8-connected components of the masks), of the fraction of
    the region that is flagged. The curve starts at ``(0, 0)`` and holds every point with
    ``fpr <= max_fpr`` plus the first point beyond it; with ``max_fpr=1`` it ends at ``(1, 1)``.
    Returns ``None`` when there is no defect region or no nominal pixel.

    Instead of thresholding once per distinct score, the pixels are sorted once: going down
    the ranking, each nominal pixel adds ``1 / n_nominal`` to the FPR and each defective pixel
    adds ``1 / (size of its region * n_regions)`` to the PRO, so cumulative sums give the curve.
    """
    if not 0.0 < max_fpr <= 1.0:
        raise InputError(f"max_fpr: expected a number in (0, 1], got {max_fpr}")
    masks, maps = _check_pixel_inputs(masks, maps)
    regions, n_regions = ndimage.label(masks, structure=_EIGHT_CONNECTED_PER_IMAGE)
    pixels_per_region = np.bincount(regions.ravel(), minlength=n_regions + 1)
    n_nominal = int(pixels_per_region[0])  # label 0 is the nominal background
    if n_regions == 0 or n_nominal == 0:
        return None
    pro_step = np.zeros(n_regions + 1)
    pro_step[1:] = 1.0 / (pixels_per_region[1:] * n_regions)

    scores, region_of = maps.ravel(), regions.ravel()
    if max_fpr < 1.0:
        # Only the top of the ranking can matter: keep pixels scoring at least the k-th highest
        # nominal score, with k one above max_fpr * n_nominal so rounding can never cut short.
        k = min(n_nominal, int(np.ceil(max_fpr * n_nominal)) + 1)
        nominal_scores = scores[region_of == 0]
        cut = np.partition(nominal_scores, n_nominal - k)[n_nominal - k]
        keep = scores >= cut
        scores, region_of = scores[keep], region_of[keep]

    order = np.argsort(scores)[::-1]  # descending; the order within ties does not matter
    return _curve_from_ranking(scores[order], region_of[order], pro_step, n_nominal, max_fpr)


def aupro(masks: np.ndarray, maps: np.ndarray, max_fpr: float = 0.3) -> float | None:
    """Area under the PRO curve from FPR 0 to ``max_fpr``, divided by ``max_fpr``.

    A perfect map gives 1.0; a constant (useless) map gives ``max_fpr / 2``. The curve is
    integrated with the trapezoid rule, its value at exactly ``max_fpr`` found by linear
    interpolation. Returns ``None`` when the masks hold no defect (or nothing nominal).

    >>> masks = np.zeros((1, 4, 4), dtype=bool); masks[0, 1:3, 1:3] = True
    >>> aupro(masks, masks.astype(float))
    1.0
    """
    if not 0.0 < max_fpr <= 1.0:
        raise InputError(f"max_fpr: expected a number in (0, 1], got {max_fpr}")
    curve = pro_curve(masks, maps, max_fpr=max_fpr)
    if curve is None:
        return None
    fpr, pro = curve
    return _area_up_to(fpr, pro, max_fpr) / max_fpr


def mask_iou(masks: np.ndarray, predicted: np.ndarray) -> float | None:
    """Intersection over union of ``predicted`` and ground-truth ``masks``, pooled over all pixels.

    ``masks`` and ``predicted`` are boolean, (N, H, W) or one (H, W) pair: the pixels of all images
    count together, |predicted ∩ truth| / |predicted ∪ truth|. ``None`` when both are empty (no
    union to measure).

    >>> truth = np.array([[True, True, False, False]])
    >>> mask_iou(truth, np.array([[False, True, True, False]]))
    0.3333333333333333
    >>> mask_iou(~truth & truth, ~truth & truth) is None
    True
    """
    masks, predicted = np.asarray(masks, dtype=bool), np.asarray(predicted, dtype=bool)
    if masks.shape != predicted.shape:
        raise InputError(f"masks, predicted: expected the same shape, got {masks.shape} and {predicted.shape}")
    union = np.count_nonzero(masks | predicted)
    return float(np.count_nonzero(masks & predicted) / union) if union else None


def per_defect_metrics(
    labels: Sequence[int],
    defect_types: Sequence[str],
    scores: Sequence[float],
    masks: np.ndarray | None = None,
    maps: np.ndarray | None = None,
    max_fpr: float = 0.3,
) -> dict[str, dict]:
    """Metrics for each defect type, each measured against all nominal images.

    Returns ``{defect_type: {"n_images", "image_auroc", "pixel_auroc", "aupro"}}`` sorted by
    defect type; the pixel metrics use the nominal images plus that type's images and are
    ``None`` without ``masks`` and ``maps``.

    >>> per_defect_metrics([0, 0, 1, 1], ["good", "good", "crack", "spot"], [0.1, 0.3, 0.5, 0.2])
    ... # doctest: +NORMALIZE_WHITESPACE
    {'crack': {'n_images': 1, 'image_auroc': 1.0, 'pixel_auroc': None, 'aupro': None},
     'spot': {'n_images': 1, 'image_auroc': 0.5, 'pixel_auroc': None, 'aupro': None}}
    """
    labels, scores = _check_image_inputs(labels, scores)
    defect_types = np.asarray(defect_types, dtype=str)
    if defect_types.shape != labels.shape:
        raise InputError(f"defect_types: expected one per image ({labels.size}), got shape {defect_types.shape}")
    if (masks is None) != (maps is None):
        raise InputError("masks, maps: give both for pixel metrics, or neither")
    if masks is not None:
        masks, maps = _check_pixel_inputs(masks, maps)
        if len(masks) != labels.size:
            raise InputError(f"masks: expected one per image ({labels.size}), got {len(masks)}")
    nominal = labels == 0
    if not nominal.any():
        raise InputError("labels: no nominal images; each defect type is compared against them")

    results = {}
    for defect in sorted(set(defect_types[~nominal])):
        chosen = nominal | ((labels == 1) & (defect_types == defect))
        results[str(defect)] = {
            "n_images": int(np.count_nonzero(chosen & ~nominal)),
            "image_auroc": image_auroc(labels[chosen], scores[chosen]),
            "pixel_auroc": None if masks is None else pixel_auroc(masks[chosen], maps[chosen]),
            "aupro": None if masks is None else aupro(masks[chosen], maps[chosen], max_fpr),
        }
    return results


def _area_up_to(x: np.ndarray, y: np.ndarray, x_max: float) -> float:
    """Trapezoid area under the polyline ``(x, y)`` (``x`` ascending) from ``x[0]`` to ``x_max``."""
    stop = np.searchsorted(x, x_max, side="right")  # x[:stop] <= x_max
    xs, ys = x[:stop], y[:stop]
    if xs[-1] < x_max:  # close the area with the curve's value at exactly x_max
        y_at_max = np.interp(x_max, x[stop - 1 : stop + 1], y[stop - 1 : stop + 1])
        xs, ys = np.append(xs, x_max), np.append(ys, y_at_max)
    return float(np.trapezoid(ys, xs))


def _check_image_inputs(labels, scores) -> tuple[np.ndarray, np.ndarray]:
    labels, scores = np.asarray(labels), np.asarray(scores, dtype=np.float64)
    if labels.ndim != 1 or labels.shape != scores.shape:
        raise InputError(
            f"labels, scores: expected two 1-D arrays of the same length, got shapes {labels.shape} and {scores.shape}"
        )
    if labels.size == 0:
        raise InputError("labels: no images given")
    if not np.isin(labels, (0, 1)).all():
        raise InputError(f"labels: expected 0 (nominal) or 1 (anomalous), got {np.unique(labels)[:10]}")
    if not np.isfinite(scores).all():
        raise InputError("scores: contain NaN or infinite values")
    return labels.astype(np.int64), scores


def _check_pixel_inputs(masks, maps) -> tuple[np.ndarray, np.ndarray]:
    masks, maps = np.asarray(masks), np.asarray(maps)
    if masks.ndim == 2 and maps.ndim == 2:  # a single image
        masks, maps = masks[None], maps[None]
    if masks.ndim != 3 or masks.shape != maps.shape:
        raise InputError(
            f"masks, maps: expected two arrays of the same shape (N, H, W), got {masks.shape} and {maps.shape}"
        )
    if masks.dtype != bool:
        if not np.isin(masks, (0, 1)).all():
            raise InputError(
                "masks: expected boolean masks (or 0/1), got other values; "
                "binarise them first, e.g. with images.read_mask"
            )
        masks = masks.astype(bool)
    if maps.dtype not in (np.float32, np.float64):
        maps = maps.astype(np.float64)
    if not np.isfinite(maps).all():
        raise InputError("maps: contain NaN or infinite values")
    return masks, maps
