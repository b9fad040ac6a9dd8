"""The estimator contract: every estimator is a scikit-learn estimator, checked by scikit-learn itself.

scikit-learn's full ``check_estimator`` feeds numeric arrays ``X``; these estimators take images,
so only the checks about parameters, ``__init__``, cloning and ``repr`` apply, and they run here
on every estimator. Numbers, not images, are what the fit-time check refuses: a bad value must
fail in ``fit`` before the backbone is ever loaded.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.utils import estimator_checks

from patchcore_kit.base import AnomalyEstimator, ScoredImages, parameter_names
from patchcore_kit.baselines import SPADE, NearestImage, PaDiM
from patchcore_kit.errors import InputError
from patchcore_kit.params import RULES
from patchcore_kit.patchcore import PatchCore

ESTIMATORS = [PatchCore, PaDiM, SPADE, NearestImage]
#: scikit-learn's checks that need no numeric X (the rest feed arrays of numbers to fit)
SKLEARN_CHECKS = [
    "check_parameters_default_constructible",
    "check_no_attributes_set_in_init",
    "check_get_params_invariance",
    "check_set_params",
    "check_estimator_repr",
    "check_estimator_cloneable",
    "check_do_not_raise_errors_in_init_or_set_params",
]
#: one value per parameter that its rule refuses
BAD = {
    "backbone": "resnet9",
    "layers": ("layer5",),
    "patch_size": 4,
    "aggregation": "median",
    "border": "wrap",
    "pretrain_dim": 0,
    "target_dim": 0,
    "coreset_ratio": 1.5,
    "sampler": "kmeans",
    "projection_dim": 0,
    "num_neighbors": 0,
    "search": "annoy",
    "image_size": 8,
    "weights": "",
    "device": "gpu",
    "batch_size": 0,
    "seed": -1,
    "threshold_quantile": 2.0,
    "calibrate": "yes",
    "feature_cache": "",
    "progress": 1,
    "n_features": 0,
    "epsilon": 0.0,
    "global_layer": "layer9",
    "top_k_images": 0,
    "k": 0,
    "pixel_matching": "nearest",
}


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda cls: cls.__name__)
@pytest.mark.parametrize("check", SKLEARN_CHECKS)
def test_scikit_learn_parameter_checks(estimator, check):
    getattr(estimator_checks, check)(estimator.__name__, estimator())


def test_clone_and_set_params_work_for_every_estimator():
    model = PatchCore(coreset_ratio=0.2)
    copy = clone(model)
    assert copy is not model and copy.get_params() == model.get_params() and copy.coreset_ratio == 0.2
    for estimator in ESTIMATORS:
        model = estimator()
        assert model.set_params(seed=7, image_size=(64, 96)) is model
        assert model.get_params()["seed"] == 7 and model.image_size == (64, 96)
        assert clone(model).get_params() == model.get_params()
        with pytest.raises(ValueError, match="Invalid parameter"):
            model.set_params(no_such_parameter=1)


def test_every_estimator_parameter_has_one_rule():
    for estimator in ESTIMATORS:
        names = parameter_names(estimator)
        assert set(names) <= set(RULES), (estimator.__name__, sorted(set(names) - set(RULES)))
        assert set(names) <= set(BAD)  # and this test has a bad value for each


@pytest.mark.parametrize("estimator", ESTIMATORS, ids=lambda cls: cls.__name__)
def test_a_bad_parameter_fails_in_fit_before_the_backbone_runs(estimator, monkeypatch):
    loads = []
    monkeypatch.setattr("patchcore_kit.extractor.load_backbone", lambda *a, **k: loads.append(a) or 1 / 0)
    images = [np.zeros((40, 40, 3), np.uint8)] * 2
    for name in parameter_names(estimator):
        model = estimator()
        model.set_params(**{name: BAD[name]})  # accepted here, as in scikit-learn: checked by fit
        with pytest.raises(InputError, match=f"{estimator.__name__}: {name} must be"):
            model.fit(images)
    assert loads == []


def test_set_params_is_checked_again_on_the_next_fit(monkeypatch):
    monkeypatch.setattr("patchcore_kit.extractor.load_backbone", lambda *a, **k: 1 / 0)
    model = PatchCore().set_params(num_neighbors=0)
    with pytest.raises(InputError, match="num_neighbors must be"):
        model.fit([np.zeros((40, 40, 3), np.uint8)])


def test_scores_follow_scikit_learn_naming(tiny_patchcore_images):
    train, test, labels = tiny_patchcore_images
    model = PatchCore(image_size=64, coreset_ratio=0.5, calibrate=True).fit(train)
    scored = model.score_images(test)
    assert isinstance(scored, ScoredImages) and scored.maps.shape == (len(test), 64, 64)
    np.testing.assert_array_equal(model.decision_function(test), scored.scores)
    np.testing.assert_array_equal(model.anomaly_map(test), scored.maps)
    np.testing.assert_array_equal(model.predict(test), (scored.scores > model.threshold_).astype(int))
    from patchcore_kit.metrics import image_auroc

    assert model.score(test, labels) == image_auroc(labels, scored.scores)  # one number, as sklearn's score


@pytest.fixture(scope="module")
def tiny_patchcore_images():
    """Five noise images to train on; two like them and two with a bright square to test."""
    rng = np.random.default_rng(0)

    def noise():
        return (rng.normal(120, 10, (64, 64, 3))).clip(0, 255).astype(np.uint8)

    train = [noise() for _ in range(5)]
    defect = [noise() for _ in range(2)]
    for image in defect:
        image[20:40, 20:40] = 255
    return train, [noise(), noise()] + defect, np.array([0, 0, 1, 1])


def test_the_base_class_has_no_parameters_of_its_own():
    assert parameter_names(AnomalyEstimator) == ()
