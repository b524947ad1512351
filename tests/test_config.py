"""MaskConfig: validation with clear messages and a JSON round-trip."""

import pytest

from hf_keepwhat import MaskConfig


def test_json_round_trip(tmp_path):
    config = MaskConfig(
        unit_kinds=["heads", "ffn"],
        budget="macs",
        target_sparsity=0.25,
        penalty_weight=10.0,
        modules_to_save=["classifier"],
        last_layer=2,
        target_warmup_steps=7,
    )
    path = tmp_path / "mask_config.json"
    config.to_json_file(path)
    assert MaskConfig.from_json_file(path) == config


@pytest.mark.parametrize("target", [-0.1, 1.0, 1.5])
def test_target_outside_unit_interval(target):
    with pytest.raises(ValueError, match=r"outside \[0, 1\)"):
        MaskConfig(target_sparsity=target)


def test_unknown_unit_kind_names_the_choices():
    with pytest.raises(ValueError, match="Unknown unit kind.*'neurons'.*heads"):
        MaskConfig(unit_kinds=["heads", "neurons"])


def test_unknown_budget():
    with pytest.raises(ValueError, match="Unknown budget 'flops'"):
        MaskConfig(budget="flops")


def test_unknown_json_field(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"target_sparsity": 0.5, "sparsity": 0.3}')
    with pytest.raises(ValueError, match=r"Unknown MaskConfig field\(s\) \['sparsity'\]"):
        MaskConfig.from_json_file(path)


def test_corrupt_json_names_the_file(tmp_path):
    path = tmp_path / "c.json"
    path.write_text('{"target_sparsity": 0.5')
    with pytest.raises(ValueError, match="c.json is not valid JSON"):
        MaskConfig.from_json_file(path)
