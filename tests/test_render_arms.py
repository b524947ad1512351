"""benchmarks/render_arms.py's reading of weight_arms rows: variants of the default are paired
with the default's run of the same seed, and a run that starts from another costs both."""

from render_arms import against_default_table, arms_table

from hf_keepwhat.tasks.uncertainty import hex_bits

CLIPS = 8


def _row(arm: str, seed: int, right: int, seconds: float) -> dict:
    """A weight_arms row whose first `right` of 8 test clips are right."""
    correct = [index < right for index in range(CLIPS)]
    return {
        "arm": arm, "seed": seed, "model": "m", "validation": 0.5, "test": right / CLIPS,
        "correct": {"test": hex_bits(correct)}, "test_examples": CLIPS, "train_seconds": seconds,
        "macs_fraction_of_dense": 0.5, "latency_ms": 1.0, "peak_rss_bytes": 2**30,
    }  # fmt: skip


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def test_variants_are_read_against_the_default_of_their_seed_and_a_second_run_costs_both():
    rows = [
        *(_row("finetune", seed, 4, 60) for seed in (0, 1)),
        *(_row("masks_train_backbone_rerun", seed, 4, 120) for seed in (0, 1)),
        *(_row("masks_from_finetuned_dense", seed, 6, 60) for seed in (0, 1)),
        _row("masks_train_backbone_best_of_3", 1, 2, 300),  # one seed only: paired on it
    ]
    table = against_default_table(rows)
    default, chained, best_of = (_cells(line) for line in table[2:])
    assert default[4] == "-" and default[5].startswith("+0.0") and default[6] == "2.0"
    assert chained[3] == "75.0 (0.0)" and chained[4].startswith("+25.0")
    assert chained[6] == "3.0"  # the default's 2 minutes and its own 1
    assert best_of[1] == "1" and best_of[4].startswith("-25.0")
    # They are shown only there: the arms table keeps the arms run with the project's protocol.
    assert [_cells(line)[0] for line in arms_table(rows)[2:]] == [
        "tiny.en, every weight fine-tuned (transformers' example)"
    ]
