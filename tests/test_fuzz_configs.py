"""Fuzzing `MaskConfig` and the adapter config: any field of any type is accepted or refused with
a `ValueError`/`TypeError` naming the field; never a traceback from deeper down."""

import dataclasses
import json
import math

from hypothesis import given, settings
from hypothesis import strategies as st

from hf_keepwhat import MaskConfig
from hf_keepwhat.adapter import read_adapter_config

FIELDS = [f.name for f in dataclasses.fields(MaskConfig)]
VALUES = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-5, 5),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=6),
    st.lists(st.sampled_from(["heads", "ffn", "conv", "x", ""]), max_size=3),
    st.lists(st.integers(0, 3), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(FIELDS), VALUES, max_size=4))
def test_mask_config_accepts_or_names_the_field(fields):
    try:
        config = MaskConfig(**fields)
    except (ValueError, TypeError, FileNotFoundError) as e:  # the last: latency_table's path
        assert any(name in str(e) for name in fields), (fields, str(e))
        return
    assert 0 <= config.target_sparsity < 1 and math.isfinite(config.penalty_weight)
    assert all(isinstance(k, str) for k in config.unit_kinds)
    assert MaskConfig.from_dict(json.loads(config.to_json_string())) == config


KEYS = ["model_class", "mask_config", "unit_groups", "head_config", "base_model", "extra"]
GOOD = {
    "model_class": "WhisperForAudioClassification",
    "mask_config": {"target_sparsity": 0.5},
    "unit_groups": [{"name": "encoder.layers.0.heads", "num_units": 4}],
    "head_config": {"num_labels": 3},
}


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.sampled_from(KEYS), VALUES, max_size=3),
    st.lists(st.sampled_from(KEYS), max_size=2),
)
def test_adapter_config_accepts_or_names_the_field(tmp_path_factory, changes, removed):
    saved = {**GOOD, **changes}
    for key in removed:
        saved.pop(key, None)
    path = tmp_path_factory.mktemp("adapter") / "keepwhat_adapter_config.json"
    path.write_text(json.dumps(saved))
    try:
        read_adapter_config(str(path))
    except (ValueError, TypeError) as e:
        named = [k for k in KEYS if k in str(e)] + [f for f in FIELDS if f in str(e)]
        assert named, (saved, str(e))
