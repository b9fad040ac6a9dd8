"""scripts/mtd_settings.py chooses MTD settings on a development split: it must never touch the test set."""
from __future__ import annotations

import importlib.util
from pathlib import Path

from patchcore_kit.data import load_dataset

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "mtd_settings.py"


def _script():
    spec = importlib.util.spec_from_file_location("mtd_settings", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_development_split_shares_nothing_with_the_reported_test_set(mtd_root):
    script = _script()
    split = load_dataset(mtd_root, "mtd", seed=script.SEED)
    dev, held_out = script.development_split(split)

    test_nominal = {s.path for s in split.test if s.label == 0}
    dev_nominal = [s for s in dev.test if s.label == 0]
    dev_defects = [s for s in dev.test if s.label == 1]
    # nominal development images come from the training pool, never from the test set
    assert dev_nominal and not {s.path for s in dev_nominal} & test_nominal
    assert {s.path for s in dev.train + dev_nominal} == {s.path for s in split.train}
    # no tile straddles development training and development test
    assert not {s.group for s in dev.train} & {s.group for s in dev_nominal}
    # the defective images are halved by tile, per class, and the halves are disjoint and complete
    assert not {s.group for s in dev_defects} & {s.group for s in held_out}
    assert sorted(s.path for s in dev_defects + held_out) == sorted(s.path for s in split.test if s.label)
    for defect in {s.defect_type for s in held_out}:
        assert any(s.defect_type == defect for s in dev_defects)
    # seeded: the same call gives the same split
    again, _ = script.development_split(split)
    assert again.split_hash() == dev.split_hash()


def test_every_candidate_is_a_valid_patchcore_setting():
    from patchcore_kit import PatchCore

    script = _script()
    for name, params in script.CANDIDATES.items():
        model = PatchCore(**params)
        assert model.get_params()["layers"] == params["layers"], name
