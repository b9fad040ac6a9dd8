"""Interactive explorers for the notebooks: plain render functions, thin ipywidgets wiring.

Every control in notebooks 02–04 calls a *render function*: ``(state, control values) -> Figure``.
The expensive work happens once, when the state is built (backbone features come from the
feature cache, fits are memoised), so moving a control only re-scores or re-draws. Tests call the
render functions directly; the ``*_explorer`` functions only connect ipywidgets to them.

* 02, the coreset: :func:`coreset_state` -> :func:`render_coreset_view` <- :func:`coreset_explorer`
* 03, the sweep: result tables -> :func:`render_sweep` <- :func:`sweep_explorer`
* 04, the gallery: :class:`GalleryState` -> :func:`render_gallery`, :func:`gallery_metrics` <- :func:`gallery_explorer`
* 05, decisions: :class:`DecisionState` -> :func:`render_errors`, :func:`decision_table` <- :func:`errors_explorer`

>>> state = coreset_state(features, grid=(16, 16), images=train_images)   # doctest: +SKIP
>>> render_coreset_view(state, ratio=0.05)                                # a Figure   # doctest: +SKIP
>>> coreset_explorer(state)                                               # a widget   # doctest: +SKIP
"""
from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

from .coreset import coreset_size, covering_radius, greedy_coreset
from .data import Split
from .evaluate import ground_truth_masks
from .images import as_hw, display_image
from .metrics import per_defect_metrics
from .patchcore import PatchCore, image_scores_for
from .thresholds import budget_threshold, decision_counts
from .viz import (
    METRIC_LABELS,
    PAPER_MVTEC_REFERENCE,
    plot_coreset_embedding,
    plot_gallery,
    plot_patch_picks,
    plot_sample_efficiency,
)


# --- shared helpers ---------------------------------------------------------------------------
def figure_png(figure: Figure, dpi: int = 90) -> bytes:
    """The figure as PNG bytes (what an ``ipywidgets.Image`` shows)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi)
    return buffer.getvalue()


def patch_positions(indices, grid: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row indices into a flattened bank -> ``(image, row, col)``: banks are image by image, row-major."""
    indices = np.asarray(indices, dtype=np.int64)
    h, w = grid
    return indices // (h * w), (indices % (h * w)) // w, indices % w


def umap_embedding(features, n_neighbors: int = 15, min_dist: float = 0.1, n_epochs: int | None = None,
                   seed: int = 0, cache_dir: str | Path | None = None) -> np.ndarray:
    """A seeded 2-D UMAP of ``features`` ``(N, D)``, stored in ``cache_dir`` under a key of data + settings.

    UMAP takes tens of seconds (plus numba's compilation on first use); the cache makes a second
    run of a notebook instant. The key hashes the feature bytes, so other data never reads a stale
    embedding.
    """
    x = np.ascontiguousarray(np.asarray(features, dtype=np.float32))
    settings = (x.shape, n_neighbors, min_dist, n_epochs, seed)
    key = hashlib.sha256(repr(settings).encode() + x.tobytes()).hexdigest()[:24]
    path = Path(cache_dir) / f"umap_{key}.npy" if cache_dir is not None else None
    if path is not None and path.is_file():
        return np.load(path)
    import umap  # imported late: it loads numba, which takes a few seconds

    # A seed makes UMAP single-threaded anyway; saying so spares the notebook its warning about it.
    reducer = umap.UMAP(n_neighbors=n_neighbors, min_dist=min_dist, n_epochs=n_epochs, random_state=seed,
                        n_jobs=1)
    embedding = reducer.fit_transform(x).astype(np.float32)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial.npy")
        np.save(partial, embedding)
        partial.replace(path)
    return embedding


def _explorer(render: Callable[..., Figure], controls: dict, extra: Callable[..., str] | None = None):
    """Controls above a picture (and optionally an HTML table below); any change re-renders both."""
    import ipywidgets as widgets

    picture = widgets.Image(format="png", layout=widgets.Layout(width="100%", max_width="1100px"))
    table = widgets.HTML()

    def update(*_):
        values = {name: control.value for name, control in controls.items()}
        picture.value = figure_png(render(**values))
        if extra is not None:
            table.value = extra(**values)

    for control in controls.values():
        control.observe(update, names="value")
    update()
    rows = [widgets.HBox(list(controls.values())[i : i + 3]) for i in range(0, len(controls), 3)]
    return widgets.VBox(rows + [picture] + ([table] if extra is not None else []))


# --- 02: the coreset --------------------------------------------------------------------------
@dataclass
class CoresetState:
    """Everything :func:`render_coreset_view` needs; built by :func:`coreset_state`.

    ``order`` is greedy k-center's pick order: the coreset for *any* size ``n`` is ``order[:n]``,
    because the greedy rule never revisits a choice. ``radii[i]`` is the covering radius after
    ``i + 1`` picks. ``random_order`` is a seeded permutation: the random coreset of size ``n`` is
    its prefix. ``shown`` indexes the embedded patches — every pick of both samplers, plus a
    uniform random sample of the whole bank (``in_sample``) that shows where the bank is dense —
    and ``embedding`` holds their 2-D coordinates.
    """

    features: torch.Tensor  # (N, D) all training patches
    grid: tuple[int, int]
    images: np.ndarray  # (n_images, H, W, 3) the training images, for drawing picks
    order: np.ndarray
    radii: np.ndarray
    shown: np.ndarray
    in_sample: np.ndarray  # (len(shown),) bool: part of the uniform sample
    embedding: np.ndarray
    random_order: np.ndarray | None = None
    projection_dim: int | None = 128
    seed: int = 0

    @property
    def max_ratio(self) -> float:
        return len(self.order) / len(self.features)

    def coreset(self, ratio: float, sampler: str = "greedy") -> np.ndarray:
        """The ``sampler``'s coreset of ``ratio`` of all patches (a prefix of its pick order)."""
        n = coreset_size(len(self.features), ratio)
        if n > len(self.order):
            raise ValueError(f"ratio {ratio} needs {n} picks; this state holds {len(self.order)} "
                             f"(max_ratio {self.max_ratio:.3f})")
        if sampler == "greedy":
            return self.order[:n]
        if sampler == "random" and self.random_order is not None:
            return self.random_order[:n]
        raise ValueError(f"sampler must be 'greedy' or 'random' (when the state holds random picks), got {sampler!r}")

    def radius(self, ratio: float, sampler: str = "greedy") -> float:
        """Covering radius of that coreset (in the projected space greedy k-center works in)."""
        if sampler == "greedy":
            return float(self.radii[len(self.coreset(ratio)) - 1])
        memo = self.__dict__.setdefault("_radius_memo", {})
        if (ratio, sampler) not in memo:
            memo[ratio, sampler] = covering_radius(self.features, self.coreset(ratio, sampler), self.projection_dim,
                                                   self.seed)
        return memo[ratio, sampler]


def coreset_state(features, grid: tuple[int, int], images, max_ratio: float = 0.25, n_shown: int = 3000,
                  projection_dim: int | None = 128, seed: int = 0, cache_dir: str | Path | None = None,
                  umap_params: dict | None = None, with_random: bool = True) -> CoresetState:
    """Run greedy k-center once up to ``max_ratio`` and embed the picks and a sample of the bank with UMAP.

    ``features`` ``(N, D)`` are all training patches, image by image on ``grid`` (e.g. the
    ``memory_bank_`` of a ``PatchCore(sampler="none")``); ``images`` the training images as arrays.
    The picks match ``PatchCore(coreset_ratio=r, projection_dim=projection_dim, seed=seed)``. UMAP
    sees all ``max_ratio * N`` picks plus ``n_shown`` uniformly drawn patches, so keep
    ``max_ratio`` to the ratios you want to look at. ``with_random`` also draws a random coreset
    of every size (a seeded permutation's prefix), to compare with greedy in the same picture.
    """
    features = torch.as_tensor(features).float()
    n_max = coreset_size(len(features), max_ratio)
    order, radii = greedy_coreset(features, n_max, projection_dim=projection_dim, seed=seed, return_radii=True)
    sample = np.random.default_rng(seed).choice(len(features), min(n_shown, len(features)), replace=False)
    random_order = np.random.default_rng(seed + 1).permutation(len(features))[:n_max] if with_random else None
    shown = np.union1d(order, sample) if random_order is None else np.union1d(np.union1d(order, sample), random_order)
    embedding = umap_embedding(features[shown].numpy(), seed=seed, cache_dir=cache_dir, **(umap_params or {}))
    return CoresetState(features, tuple(grid), np.asarray(images), order, radii, shown, np.isin(shown, sample),
                        embedding, random_order, projection_dim, seed)


def render_coreset_view(state: CoresetState, ratio: float, image_index: int = 0, sampler: str = "greedy") -> Figure:
    """Left: the UMAP of the bank with the ``sampler``'s coreset of ``ratio`` highlighted. Right: its picks in one image."""
    picks = state.coreset(ratio, sampler)
    figure = Figure(figsize=(11, 4.8), layout="constrained")
    left, right = figure.subplots(1, 2, width_ratios=[1.25, 1])
    selected = np.isin(state.shown, picks)
    plot_coreset_embedding(
        state.embedding, selected, background=state.in_sample, ax=left,
        title=f"{sampler} coreset, ratio {ratio:g}: {len(picks)} of {len(state.features)} patches\n"
              f"coverage radius {state.radius(ratio, sampler):.1f} (in greedy's random projection)",
    )
    image, rows, cols = patch_positions(picks, state.grid)
    here = image == image_index
    plot_patch_picks(state.images[image_index], rows[here], cols[here], state.grid, ax=right,
                     title=f"training image {image_index}: {int(here.sum())} of its "
                           f"{state.grid[0] * state.grid[1]} patches kept")
    return figure


def coreset_explorer(state: CoresetState, ratios: Sequence[float] | None = None,
                     variants: dict | None = None):
    """A ratio slider, a sampler choice (greedy / random) and a training-image chooser over :func:`render_coreset_view`.

    ``variants`` (``{name: CoresetState or a function returning one}``) adds a "bank" chooser:
    other patch features of the same training images (another patch size, stages, aggregation or
    border handling). A function is called the first time its name is chosen — a fit from the
    feature cache, a greedy search and a UMAP, tens of seconds — and its state is kept.
    """
    import ipywidgets as widgets

    if ratios is None:
        ratios = [r for r in (0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25) if r <= state.max_ratio + 1e-9]
    controls = {
        "ratio": widgets.SelectionSlider(options=list(ratios), value=ratios[len(ratios) // 2],
                                         description="coreset ratio", continuous_update=False,
                                         style={"description_width": "initial"}),
        "image_index": widgets.Dropdown(options=list(range(len(state.images))), value=0, description="image"),
    }
    if state.random_order is not None:
        controls["sampler"] = widgets.ToggleButtons(options=["greedy", "random"], value="greedy", description="sampler")
    built = {}
    if variants:
        names = list(variants)
        built = {name: v for name, v in variants.items() if isinstance(v, CoresetState)}
        controls["bank"] = widgets.Dropdown(options=names, value=next((n for n in names if built.get(n) is state), names[0]),
                                            description="bank", style={"description_width": "initial"})

    def render(bank=None, **values):
        chosen = state
        if bank is not None:
            if bank not in built:
                built[bank] = variants[bank]()
            chosen = built[bank]
        return render_coreset_view(chosen, **values)

    return _explorer(render, controls)


# --- 04: the segmentation gallery ---------------------------------------------------------------
class GalleryState:
    """A test set with its pictures and masks, and memoised PatchCore fits on cached features.

    Changing the coreset ratio, the patch size or the aggregation refits from the feature cache
    (no backbone pass); changing the number of neighbours b only re-weighs stored numbers: the
    test set is scored once per fit with the distances of each image's worst patch to its
    ``max_neighbors`` nearest bank entries kept, and Eq. 7 for any smaller b reads a prefix of them
    (:func:`~patchcore_kit.patchcore.image_scores_for`). Threshold and colour map only re-draw.
    ``warm()`` computes every combination up front, so the controls then respond at once.

    With ``calibrate=True`` (a PatchCore parameter) every fit also sets its pixel threshold from
    leave-one-out scores of the *nominal training images*, and :meth:`normalised_maps` are in
    units of that threshold: 1.0 is the decision threshold, chosen without looking at the test
    set. Without calibration the maps are divided by the test set's largest value, which is fine
    for a picture but is not a threshold (it depends on the test images, defects included).

    Extra PatchCore settings (``patch_size``, ``layers``, ...) go into :meth:`result` as keywords;
    each combination is fitted once.

    >>> state = GalleryState(split, image_size=224, feature_cache="data/feature_cache")   # doctest: +SKIP
    >>> scores, maps = state.result(coreset_ratio=0.1, num_neighbors=9)                   # doctest: +SKIP
    """

    def __init__(self, split: Split, max_neighbors: int = 9, **patchcore_params):
        self.split = split
        self.params = {"calibrate": False, **patchcore_params}
        self.max_neighbors = max_neighbors
        self.image_size = as_hw(PatchCore(**self.params).image_size)
        self.images = np.stack([display_image(path, self.image_size) for path in split.test_paths])
        self.masks = ground_truth_masks(split, self.image_size)
        self.labels = split.test_labels
        self.defect_types = np.asarray(split.test_defect_types, dtype=str)
        self._models: dict = {}
        self._scored: dict = {}

    @property
    def calibrated(self) -> bool:
        return bool(self.params.get("calibrate"))

    def _settings(self, settings: dict) -> dict:
        """The settings that differ from the state's own PatchCore parameters (lists as tuples)."""
        base = PatchCore(**self.params).get_params()
        norm = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items() if v is not None}
        same = {k for k, v in norm.items() if k in base and (tuple(base[k]) if isinstance(base[k], (list, tuple)) else base[k]) == v}
        return {k: v for k, v in norm.items() if k not in same}

    def _key(self, coreset_ratio: float, settings: dict) -> tuple:
        return (coreset_ratio,) + tuple(sorted(self._settings(settings).items()))

    def model(self, coreset_ratio: float, **settings) -> PatchCore:
        key = self._key(coreset_ratio, settings)
        if key not in self._models:
            model = PatchCore(**{**self.params, **self._settings(settings), "coreset_ratio": coreset_ratio})
            self._models[key] = model.fit(self.split.train_paths)
        return self._models[key]

    def neighbors(self, coreset_ratio: float, num_neighbors: int = 1, **settings):
        """``(s*, neighbour distances, maps)`` of the test set for this fit; scored once per fit."""
        key = self._key(coreset_ratio, settings)
        stored = self._scored.get(key)
        model = self.model(coreset_ratio, **settings)
        wanted = min(max(int(num_neighbors), 1), len(model.memory_bank_))
        if stored is None or stored[1].shape[1] < wanted:
            stored = model.score_neighbors(self.split.test_paths, max(num_neighbors, self.max_neighbors))
            self._scored[key] = stored
        return stored

    def result(self, coreset_ratio: float, num_neighbors: int, **settings) -> tuple[np.ndarray, np.ndarray]:
        """Image scores ``(N,)`` and anomaly maps ``(N, H, W)`` of the test set under these settings."""
        s_star, distances, maps = self.neighbors(coreset_ratio, num_neighbors, **settings)
        return image_scores_for(s_star, distances, num_neighbors), maps

    def map_scale(self, coreset_ratio: float, num_neighbors: int = 1, **settings) -> float:
        """What :meth:`normalised_maps` divides by: the calibrated pixel threshold, else the test maximum."""
        threshold = getattr(self.model(coreset_ratio, **settings), "pixel_threshold_", None)
        if self.calibrated and threshold:
            return float(threshold)
        return max(float(self.result(coreset_ratio, num_neighbors, **settings)[1].max()), 1e-12)

    def normalised_maps(self, coreset_ratio: float, num_neighbors: int, **settings) -> np.ndarray:
        """Anomaly maps divided by :meth:`map_scale`: with calibration 1.0 is the nominal pixel threshold."""
        maps = self.result(coreset_ratio, num_neighbors, **settings)[1]
        return maps / self.map_scale(coreset_ratio, num_neighbors, **settings)

    def warm(self, ratios: Sequence[float], num_neighbors: Sequence[int], **settings) -> "GalleryState":
        self.max_neighbors = max([self.max_neighbors, *num_neighbors])
        for ratio in ratios:
            for k in num_neighbors:
                self.result(ratio, k, **settings)
        return self

    @property
    def defect_choices(self) -> list[str]:
        kinds = {str(d) for d in self.defect_types}
        return sorted(kinds - {"good"}) + (["good"] if "good" in kinds else [])


def render_gallery(state: GalleryState, defect_type: str, threshold: float | None = None, coreset_ratio: float = 0.1,
                   num_neighbors: int = 9, cmap: str = "inferno", max_images: int = 4, **settings) -> Figure:
    """Images of one defect type: ground truth, anomaly map, and the map above ``threshold``.

    One column per image (:func:`~patchcore_kit.viz.plot_gallery`): the image with the ground truth
    outlined, the anomaly map as a heat map with its colour bar, the pixels above ``threshold``.
    Maps are :meth:`GalleryState.normalised_maps`: with a calibrated state ``threshold`` is a
    multiple of the pixel threshold set on nominal training images (default 1.0, that threshold
    itself; the colour bar runs from 0 to 2); without calibration it is a fraction of the test
    set's largest value (default 0.5). Titles give the image score and its rank among all test
    images (1 = most anomalous). ``settings`` (patch_size, layers, ...) choose the fit.
    """
    if threshold is None:
        threshold = 1.0 if state.calibrated else 0.5
    scores, _ = state.result(coreset_ratio, num_neighbors, **settings)
    maps = state.normalised_maps(coreset_ratio, num_neighbors, **settings)
    chosen = np.flatnonzero(state.defect_types == defect_type)[:max_images]
    if len(chosen) == 0:
        raise ValueError(f"no test images of defect type {defect_type!r}; choose from {state.defect_choices}")
    rank = np.argsort(np.argsort(-scores)) + 1
    titles = [f"{defect_type} #{i}\nscore {scores[i]:.2f}, rank {rank[i]}/{len(scores)}" for i in chosen]
    masks = None if state.masks is None else state.masks[chosen]
    high = 2.0 if state.calibrated else 1.0
    label = "anomaly score / nominal pixel threshold" if state.calibrated else "anomaly score / test-set maximum"
    return plot_gallery(state.images[chosen], masks, maps[chosen], thresholded=maps[chosen] > threshold,
                        titles=titles, cmap=cmap, vmin=0.0, vmax=high, panel_size=2.4, colorbar_label=label,
                        threshold=threshold)


def gallery_metrics(state: GalleryState, coreset_ratio: float = 0.1, num_neighbors: int = 9,
                    threshold: float | None = None, **settings) -> pd.DataFrame:
    """Per defect type: image AUROC, pixel AUROC, AUPRO (threshold-free) and IoU at ``threshold``.

    IoU pools the pixels of all images of a type: |predicted ∩ truth| / |predicted ∪ truth|, with
    the prediction ``normalised map > threshold`` (default as in :func:`render_gallery`).
    """
    if threshold is None:
        threshold = 1.0 if state.calibrated else 0.5
    scores, maps = state.result(coreset_ratio, num_neighbors, **settings)
    table = pd.DataFrame(per_defect_metrics(state.labels, state.defect_types, scores, state.masks,
                                            maps if state.masks is not None else None)).T
    if state.masks is not None:
        predicted = state.normalised_maps(coreset_ratio, num_neighbors, **settings) > threshold
        iou = {}
        for defect in table.index:
            chosen = state.defect_types == defect
            truth, guess = state.masks[chosen], predicted[chosen]
            union = np.logical_or(truth, guess).sum()
            iou[defect] = float(np.logical_and(truth, guess).sum() / union) if union else float("nan")
        table[f"IoU @ {threshold:.2f}"] = pd.Series(iou)
    table = table.rename(columns={**METRIC_LABELS, "n_images": "images"})
    table.index.name = "defect type"
    return table.astype(float).round(3).astype({"images": int})


def gallery_explorer(state: GalleryState, ratios: Sequence[float] = (0.01, 0.1, 0.25),
                     num_neighbors: Sequence[int] = (1, 3, 9), cmaps: Sequence[str] = ("inferno", "viridis", "jet", "gray"),
                     max_images: int = 4, warm: bool = True, patch_sizes: Sequence[int] = (),
                     stages: Sequence[Sequence[str]] = (), aggregations: Sequence[str] = ()):
    """Controls for defect type, threshold, colour map, coreset ratio and neighbours over :func:`render_gallery`,
    with the per-defect metrics table below. ``warm`` fits every ratio up front.

    ``patch_sizes``, ``stages`` (pairs of stage names) and ``aggregations`` (values of PatchCore's
    ``aggregation``) add a control each when given: every new combination is fitted from the
    feature cache the first time it is chosen (new stages run the backbone once for them), and
    kept. The threshold is in units of the calibrated pixel threshold when the state is calibrated.
    """
    import ipywidgets as widgets

    if warm:
        state.warm(ratios, num_neighbors)
    style = {"description_width": "initial"}
    low, high, value = (0.25, 2.0, 1.0) if state.calibrated else (0.05, 0.95, 0.5)
    controls = {
        "defect_type": widgets.Dropdown(options=state.defect_choices, description="defect type", style=style),
        "threshold": widgets.FloatSlider(value=value, min=low, max=high, step=0.05,
                                         description="threshold" + (" (× nominal)" if state.calibrated else ""),
                                         continuous_update=False, style=style),
        "cmap": widgets.Dropdown(options=list(cmaps), description="colour map", style=style),
        "coreset_ratio": widgets.SelectionSlider(options=list(ratios), value=ratios[len(ratios) // 2],
                                                 description="coreset ratio", continuous_update=False, style=style),
        "num_neighbors": widgets.SelectionSlider(options=list(num_neighbors), value=num_neighbors[-1],
                                                 description="neighbours b", continuous_update=False, style=style),
    }
    if patch_sizes:
        default = state.params.get("patch_size", 3)
        controls["patch_size"] = widgets.Dropdown(options=list(patch_sizes), description="patch size p",
                                                  value=default if default in patch_sizes else patch_sizes[0], style=style)
    if stages:
        options = [(" + ".join(pair), tuple(pair)) for pair in stages]
        controls["layers"] = widgets.Dropdown(options=options, description="stages", style=style)
    if aggregations:
        controls["aggregation"] = widgets.Dropdown(options=list(aggregations), description="aggregation", style=style)

    def render(defect_type, threshold, cmap, coreset_ratio, num_neighbors, **settings):
        return render_gallery(state, defect_type, threshold, coreset_ratio, num_neighbors, cmap, max_images, **settings)

    def metrics_html(defect_type, threshold, cmap, coreset_ratio, num_neighbors, **settings):
        return gallery_metrics(state, coreset_ratio, num_neighbors, threshold, **settings).rename_axis(None).to_html()

    return _explorer(render, controls, extra=metrics_html)


# --- 05: decisions --------------------------------------------------------------------------------
@dataclass
class DecisionState:
    """A scored test set and what the threshold may be chosen from: nominal calibration scores only.

    ``calibration_scores`` are image scores of nominal images the model did not contain (e.g. a
    PatchCore's leave-one-out ``calibration_scores_``); ``pixel_threshold`` the model's
    ``pixel_threshold_``. Thresholds come from these alone (:meth:`threshold`); the test set is
    only judged by them.
    """

    images: np.ndarray
    masks: np.ndarray | None
    labels: np.ndarray
    defect_types: np.ndarray
    scores: np.ndarray
    maps: np.ndarray
    calibration_scores: np.ndarray
    pixel_threshold: float

    @classmethod
    def from_model(cls, model: PatchCore, split: Split) -> "DecisionState":
        """Score ``split``'s test set with a *calibrated* ``model``."""
        if getattr(model, "calibration_scores_", None) is None:
            raise ValueError("the model has no calibration scores: fit it with calibrate=True and >= 2 images")
        size = as_hw(model.image_size)
        scores, maps = model.score_images(split.test_paths)
        images = np.stack([display_image(path, size) for path in split.test_paths])
        return cls(images, ground_truth_masks(split, size), split.test_labels,
                   np.asarray(split.test_defect_types, dtype=str), scores, maps,
                   np.asarray(model.calibration_scores_), float(model.pixel_threshold_))

    def threshold(self, budget: float) -> float:
        """The image threshold that flags at most ``budget`` of the nominal calibration images."""
        return budget_threshold(self.calibration_scores, budget)


def decision_table(state: DecisionState, budgets: Sequence[float]) -> pd.DataFrame:
    """One row per false-alarm budget: its threshold and what it decides on the test set."""
    rows = [{"budget": b, **decision_counts(state.scores, state.labels, state.threshold(b))} for b in budgets]
    return pd.DataFrame(rows).set_index("budget")


def render_errors(state: DecisionState, budget: float = 0.05, kind: str = "misses", max_images: int = 4) -> Figure:
    """The worst errors at the threshold of ``budget``: missed defects (lowest scores first) or false alarms
    (highest first), as a gallery with heat maps in units of the nominal pixel threshold."""
    threshold = state.threshold(budget)
    if kind == "misses":
        chosen = np.flatnonzero((state.labels == 1) & (state.scores <= threshold))
        chosen = chosen[np.argsort(state.scores[chosen])]
        word = "missed"
    elif kind == "false alarms":
        chosen = np.flatnonzero((state.labels == 0) & (state.scores > threshold))
        chosen = chosen[np.argsort(-state.scores[chosen])]
        word = "false alarm"
    else:
        raise ValueError(f"kind must be 'misses' or 'false alarms', got {kind!r}")
    chosen = chosen[:max_images]
    if len(chosen) == 0:
        figure = Figure(figsize=(6, 1.2))
        ax = figure.add_subplot()  # an axes, so that notebooks show the figure (IPython skips empty ones)
        ax.set_axis_off()
        ax.text(0.5, 0.5, f"no {kind} at budget {budget:g} (image threshold {threshold:.2f})",
                ha="center", va="center", fontsize=11, transform=ax.transAxes)
        return figure
    maps = state.maps[chosen] / state.pixel_threshold
    titles = [f"{word}: {state.defect_types[i]}\nscore {state.scores[i]:.2f} vs {threshold:.2f}" for i in chosen]
    masks = None if state.masks is None else state.masks[chosen]
    return plot_gallery(state.images[chosen], masks, maps, thresholded=maps > 1.0, titles=titles, vmin=0.0,
                        vmax=2.0, panel_size=2.4, colorbar_label="anomaly score / nominal pixel threshold",
                        threshold=1.0)


def errors_explorer(state: DecisionState, budgets: Sequence[float] = (0.0, 0.01, 0.02, 0.05, 0.1, 0.2),
                    max_images: int = 4):
    """A false-alarm budget slider and a misses / false-alarms switch over :func:`render_errors`,
    with the decision counts of that budget below."""
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    controls = {
        "budget": widgets.SelectionSlider(options=list(budgets), value=budgets[len(budgets) // 2],
                                          description="false-alarm budget", continuous_update=False, style=style),
        "kind": widgets.ToggleButtons(options=["misses", "false alarms"], value="misses", description="show"),
    }

    def counts_html(budget, kind):
        return decision_table(state, [budget]).round(3).to_html()

    return _explorer(lambda budget, kind: render_errors(state, budget, kind, max_images), controls,
                     extra=counts_html)


# --- 03: the sample-efficiency sweep ------------------------------------------------------------
def render_sweep(results: pd.DataFrame, methods: Sequence[str] | None = None, metric: str = "image_auroc",
                 reference: dict | None = PAPER_MVTEC_REFERENCE, title: str | None = None) -> Figure:
    """The sample-efficiency curves of the chosen ``methods`` (all when None), optionally with the paper's values."""
    table = pd.DataFrame(results)
    if methods is not None:
        unknown = sorted(set(methods) - set(table.method))
        if unknown:
            raise ValueError(f"methods {unknown} are not in the results; they hold {sorted(set(table.method))}")
        table = table[table.method.isin(list(methods))]
    if table.empty:
        raise ValueError("no results to plot: choose at least one method")
    figure = plot_sample_efficiency(table, reference=reference, metric=metric)
    if title:
        figure.axes[0].set_title(title, fontsize=10)
    return figure


def sweep_explorer(tables: dict[str, pd.DataFrame]):
    """Choose a results table (dataset / category), the methods and the metric over :func:`render_sweep`."""
    import ipywidgets as widgets

    style = {"description_width": "initial"}
    names = list(tables)
    all_methods = sorted({m for t in tables.values() for m in t.method})
    metrics = [m for m in METRIC_LABELS if any(t[m].notna().any() for t in tables.values() if m in t)]
    controls = {
        "dataset": widgets.Dropdown(options=names, description="dataset", style=style),
        "methods": widgets.SelectMultiple(options=all_methods, value=tuple(all_methods), description="methods",
                                          rows=min(4, len(all_methods)), style=style),
        "metric": widgets.Dropdown(options=[(METRIC_LABELS[m], m) for m in metrics], description="metric",
                                   style=style),
        "paper": widgets.Checkbox(value=True, description="paper's MVTec AD values"),
    }

    def render(dataset, methods, metric, paper):
        table = tables[dataset]
        chosen = [m for m in methods if m in set(table.method)] or sorted(set(table.method))
        return render_sweep(table, chosen, metric, PAPER_MVTEC_REFERENCE if paper else None, title=dataset)

    return _explorer(render, controls)
