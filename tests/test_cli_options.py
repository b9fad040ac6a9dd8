"""The command line's estimator options against the estimator: one parameter, one rule, one default."""

from __future__ import annotations

import argparse
import re

import pytest

from patchcore_kit.base import parameter_names
from patchcore_kit.cli import build_parser
from patchcore_kit.cli.options import MODEL_OPTIONS, SWEEP_PATCHCORE, SWEEP_WIDE, TUNE_FIXED, option
from patchcore_kit.params import RULES
from patchcore_kit.patchcore import PatchCore

#: PatchCore parameters the command line leaves out on purpose, and why.
NOT_ON_THE_COMMAND_LINE = {
    "threshold_quantile": "predict's threshold: fit always calibrates at the paper's 0.99",
    "calibrate": "decided by the command (evaluate: no; fit: yes)",
    "progress": "decided by the terminal",
}


def _estimator_actions(command: str) -> dict[str, argparse.Action]:
    parser = build_parser()._subparsers._group_actions[0].choices[command]
    return {a.dest: a for a in parser._actions if a.dest in RULES and a.default is argparse.SUPPRESS}


def test_every_estimator_option_is_a_parameter_with_a_rule_and_back():
    params = set(parameter_names(PatchCore))
    assert set(MODEL_OPTIONS) <= params and set(MODEL_OPTIONS) <= set(RULES)
    assert set(MODEL_OPTIONS) | set(NOT_ON_THE_COMMAND_LINE) == params  # every parameter has a place
    assert not set(MODEL_OPTIONS) & set(NOT_ON_THE_COMMAND_LINE)
    assert set(SWEEP_WIDE) | set(SWEEP_PATCHCORE) | set(TUNE_FIXED) <= set(MODEL_OPTIONS)
    for command, names in [
        ("evaluate", MODEL_OPTIONS),
        ("fit", MODEL_OPTIONS),
        ("sweep", set(SWEEP_WIDE) | set(SWEEP_PATCHCORE)),
        ("tune", TUNE_FIXED),
    ]:
        actions = _estimator_actions(command)
        assert set(actions) == set(names), command
        for name, action in actions.items():
            assert action.option_strings == [option(name)]


def _shown(value) -> str:
    if isinstance(value, (tuple, list)):
        return " ".join(map(str, value))
    return str(value)


def test_the_defaults_a_help_text_names_are_the_estimators():
    defaults = PatchCore().get_params()
    named = 0
    for name, text in MODEL_OPTIONS.items():
        found = re.search(r"\(default ([^):]+)\)$", text)
        if found:
            named += 1
            assert found.group(1) == _shown(defaults[name]), name
        else:  # "(default: ...)" describes what None means
            assert defaults[name] is None and text.endswith(")"), name
    assert named >= 10


def test_an_option_not_given_leaves_the_estimators_default(tmp_path):
    from patchcore_kit.cli.options import given

    args = build_parser().parse_args(["fit", str(tmp_path), "--output", str(tmp_path / "m.safetensors")])
    assert given(args, MODEL_OPTIONS) == {}


@pytest.mark.parametrize(
    "name, text, value",
    [
        ("coreset_ratio", "250", 250),
        ("coreset_ratio", "0.01", 0.01),
        ("image_size", "256x320", (256, 320)),
        ("layers", "layer3 layer4", ("layer3", "layer4")),
        ("target_dim", "none", None),
        ("projection_dim", "none", None),
        ("search", "hnsw", "hnsw"),
        ("seed", "7", 7),
    ],
)
def test_a_given_option_reaches_the_estimator_as_its_rule_reads_it(name, text, value, tmp_path):
    from patchcore_kit.cli.options import given

    args = build_parser().parse_args(
        ["fit", str(tmp_path), "--output", str(tmp_path / "m.safetensors"), option(name), *text.split()]
    )
    assert given(args, MODEL_OPTIONS) == {name: value}
    assert PatchCore(**given(args, MODEL_OPTIONS)).get_params()[name] == value
