"""The `keepwhat` command on real artifacts written by the library."""

import pytest
from tiny_models import tiny_whisper

from hf_keepwhat import MaskConfig, get_mask_model
from hf_keepwhat.cli import main


@pytest.fixture
def adapter(tmp_path):
    mm = get_mask_model(tiny_whisper(), MaskConfig(target_sparsity=0.0))
    mm.set_kept("encoder.layers.0.heads", [1])
    mm.set_kept("encoder.layers.2.ffn", range(10))
    mm.model.save_pretrained(tmp_path / "base")  # what the adapter was trained on
    mm.model.config._name_or_path = str(tmp_path / "base")
    mm.save_pretrained(tmp_path / "adapter")
    return mm, tmp_path


def test_prune_report_card(adapter, capsys):
    mm, tmp_path = adapter
    main(["prune", str(tmp_path / "adapter"), str(tmp_path / "pruned")])
    expected = mm.sparsity_report()["total"]["params_remaining"]
    assert f"-> {expected:,}" in capsys.readouterr().out

    main(["report", str(tmp_path / "pruned")])
    printed = capsys.readouterr().out
    assert "| `encoder.layers.0` | - | 1/4 | 48/48 |" in printed

    main(["card", str(tmp_path / "pruned"), "--dataset", "fsdd", "--metric", "accuracy=0.97"])
    card = (tmp_path / "pruned" / "README.md").read_text()
    assert "| accuracy | 0.97 |" in card and "- fsdd" in card


def test_report_of_an_adapter(adapter, capsys):
    _, tmp_path = adapter
    main(["report", str(tmp_path / "adapter")])
    assert "| `encoder.layers.2` | - | 4/4 | 10/48 |" in capsys.readouterr().out


def test_errors_are_one_line(adapter, capsys):
    _, tmp_path = adapter
    with pytest.raises(SystemExit) as exit_info:
        main(["report", str(tmp_path)])
    assert "holds neither a mask adapter" in str(exit_info.value)
    with pytest.raises(SystemExit) as exit_info:
        main(["push", str(tmp_path / "adapter"), "me/x"])
    assert exit_info.value.code == 2
    assert "HF_HUB_OFFLINE is set" in capsys.readouterr().err


def test_bench_measures_dense_and_pruned(adapter, capsys):
    from hf_keepwhat.files import read_json

    mm, tmp_path = adapter
    main(["prune", str(tmp_path / "adapter"), str(tmp_path / "pruned")])
    figures = {}
    for name in ("base", "pruned"):
        out = tmp_path / f"{name}.json"
        main(
            [
                "bench",
                str(tmp_path / name),
                "--batch_size",
                "2",
                "--repeats",
                "2",
                "--json",
                str(out),
            ]
        )
        figures[name] = read_json(out)
    assert "latency" in capsys.readouterr().out
    report = mm.sparsity_report()["total"]
    assert figures["pruned"]["backbone_params"] == report["params_remaining"]
    assert figures["base"]["backbone_params"] == report["params_original"]
    # MACs of the benchmark input (batch 2) are twice those of the report's reference input.
    assert figures["pruned"]["backbone_macs"] == 2 * report["macs_remaining"]
    assert figures["pruned"]["input"] == {"input_features": [2, 16, 100]}
    assert figures["pruned"]["latency"]["repeats"] == 2
    assert figures["pruned"]["disk_bytes"] < figures["base"]["disk_bytes"]
