"""Bad inputs and faults: each is refused with an error that names the problem, and nothing is
changed or half-written."""

import json

import pytest
import torch
from tiny_models import tiny_whisper

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.adapter import ADAPTER_CONFIG_FILE
from hf_keepwhat.cli import main as keepwhat

MALICIOUS = """
import pathlib
pathlib.Path(__file__).with_name("CODE_RAN").write_text("yes")
from transformers import WhisperConfig as MaliciousConfig
"""


def _adapter_with(tmp_path, **changes):
    """A real adapter whose config was edited, and a base folder whose `auto_map` points to code
    that would leave a `CODE_RAN` file behind if anything imported it."""
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    mm.save_pretrained(tmp_path / "adapter")
    base = tmp_path / "base"
    mm.model.save_pretrained(base)
    config = json.loads((base / "config.json").read_text())
    config["auto_map"] = {"AutoConfig": "evil.MaliciousConfig"}
    (base / "config.json").write_text(json.dumps(config))
    (base / "evil.py").write_text(MALICIOUS)
    path = tmp_path / "adapter" / ADAPTER_CONFIG_FILE
    saved = json.loads(path.read_text())
    saved.update(base_model=str(base), **changes)
    path.write_text(json.dumps(saved))
    return tmp_path / "adapter", base


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"model_class": "AutoModelForAudioClassification"}, "not one hf_keepwhat supports"),
        (  # what ran the base folder's code before: an Auto class told to trust remote code
            {
                "model_class": "AutoModelForAudioClassification",
                "head_config": {"num_labels": 3, "trust_remote_code": True},
            },
            "not one hf_keepwhat supports",
        ),
        ({"model_class": "os.system"}, "not one hf_keepwhat supports"),
        ({"head_config": {"num_labels": 3, "trust_remote_code": True}}, "not head settings"),
        ({"head_config": "trust_remote_code"}, "not head settings"),
    ],
)
def test_cli_prune_never_runs_code_an_adapter_names(tmp_path, capsys, changes, message):
    adapter, base = _adapter_with(tmp_path, **changes)
    with pytest.raises(SystemExit):
        keepwhat(["prune", str(adapter), str(tmp_path / "out")])
    assert message in capsys.readouterr().err
    assert not (base / "CODE_RAN").exists() and not (tmp_path / "out").exists()


def test_card_snippets_quote_names_as_python_strings(tmp_path):
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    pruned = mm.prune()
    repo_id = 'me/x") ; import os; os.system("echo pwned'
    card = pruned.model_card(repo_id=repo_id).content
    assert f"from_pretrained({json.dumps(repo_id)})" in card
    assert 'from_pretrained("me/x")' not in card
    with torch.no_grad():
        assert pruned(input_features=torch.randn(1, 16, 100)).logits.shape == (1, 3)
