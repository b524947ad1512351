"""`docs/research.md`'s out-of-source section, from `frontier_gm_sources.json`: every setting run on
the multi-source GM layout (`audio_data/gm_sources.py`), in source and out of source side by side,
each against the same model's dense probe with a paired interval over clips and seeds, and the
ranking of the settings in source against out of source.

Choices are read on the validation splits; the test columns are reported, never chosen on.
"""

from __future__ import annotations

import json
import math

import numpy as np
from frontier import Point, bits_of

from hf_keepwhat.tasks.uncertainty import paired_interval as bootstrap_gap

SPLITS = ("validation_in_source", "test_in_source", "validation", "test")
HEADERS = {
    "validation_in_source": "in source, val",
    "test_in_source": "in source, test",
    "validation": "out of source, val",
    "test": "out of source, test",
}
#: Point fields a setting names only where they differ from the grid's.
DEFAULTS = {
    **Point.ADDED_LATER,
    "head": "linear",
    "steps": 2000,
    "mask_learning_rate": 0.02,
    "warmup_fraction": 1 / 3,
}


def setting_of(run: dict) -> str:
    """A run's setting in words: its key without the seed, the grid's defaults left out."""
    key = json.loads(run["key"])
    words = [key["model"], key["method"]]
    if key["method"] != "linear_probe":
        words.append(f"{key['target']:g}")
    if key.get("last_layer") is not None:
        words.append(f"layers 0-{key['last_layer']}")
    for name, value in sorted(key.items()):
        default = DEFAULTS.get(name, value)
        if isinstance(value, float) and isinstance(default, float):
            if not math.isclose(value, default):
                words.append(f"{name}={value:g}")
        elif value != default:
            words.append(f"{name}={value}")
    return " ".join(words)


def group(runs: list[dict]) -> dict[str, list[dict]]:
    """Runs by setting (failed runs left out), in the order first seen."""
    out: dict[str, list[dict]] = {}
    for run in runs:
        if "error" not in run:
            out.setdefault(setting_of(run), []).append(run)
    return out


def paired_interval(a: list[dict], b: list[dict], split: str, clips: int):
    """95% bootstrap interval of mean accuracy(a) - mean accuracy(b) on `split`, resampling the
    clips (paired: the same clips on both sides) and each side's seeds, so it counts both the
    luck of the clips drawn and the seed-to-seed spread (`hf_keepwhat.tasks.uncertainty`).

    Args:
        a, b: The runs of two settings (one per seed), with their `correct` bits.
        split: The split compared.
        clips: Its number of clips.
    """
    sides = [np.stack([bits_of(r["correct"][split], clips) for r in s]) for s in (a, b)]
    return bootstrap_gap(*sides)


def _cell(members: list[dict], split: str) -> str:
    values = [r["accuracy"][split] for r in members]
    spread = f" ({100 * (max(values) - min(values)):.1f})" if len(values) > 1 else ""
    return f"{100 * np.mean(values):.1f}{spread}"


def _probe_of(settings: dict, model: str) -> list[dict] | None:
    return settings.get(f"{model} linear_probe")


def _gap_text(a, b, split, interval: tuple[float, float]) -> str:
    gap = np.mean([r["accuracy"][split] for r in a]) - np.mean([r["accuracy"][split] for r in b])
    low, high = interval
    return f"{100 * gap:+.1f} [{100 * low:+.1f}, {100 * high:+.1f}]"


def _delta(members, probe, split, clips) -> str:
    if not probe:
        return "-"
    return _gap_text(members, probe, split, paired_interval(members, probe, split, clips))


def _decision(a, b, examples) -> list[str]:
    """The validation gap, the verdict (adopted where its interval lies above 0) and the test
    gap of setting `a` against `b`: one bootstrap per split."""
    interval = paired_interval(a, b, "validation", examples["validation"])
    verdict = "adopted" if interval[0] > 0 else "not adopted"
    return [
        _gap_text(a, b, "validation", interval),
        verdict,
        _delta(a, b, "test", examples["test"]),
    ]


def _ranks(settings: dict, split: str) -> dict[str, int]:
    means = {name: np.mean([r["accuracy"][split] for r in m]) for name, m in settings.items()}
    order = sorted(means, key=lambda name: -means[name])
    return {name: order.index(name) + 1 for name in means}


def _chosen(rows: list[dict], split: str) -> int:
    best = max(r["scores"][split] for r in rows)
    return min(r["last_layer"] for r in rows if r["scores"][split] == best)


def probes_section(probes: dict) -> list[str]:
    """Per model, a linear probe on each layer's pooled output (`--layer_probes`): its accuracy on
    every split, and the depth `--last_layer auto` picks on in-source validation (all a user
    whose data has one source can choose on) against out-of-source validation.

    Args:
        probes: Model name -> `hf_keepwhat.tasks.depth.layer_probes` rows.
    """
    lines = [
        "### Depth: a linear probe on each layer (`hf_keepwhat.tasks.depth`)",
        "",
        "Logistic regression on each cut encoder's time-averaged output, fitted on train. "
        "`--last_layer auto` keeps the layers up to the best validation probe.",
        "",
    ]
    for model, rows in probes.items():
        rows = [
            {**r, "scores": {"validation": r["validation_accuracy"], **r["accuracy"]}} for r in rows
        ]
        lines += [
            f"| {model}: last layer | MACs dropped | "
            + " | ".join(HEADERS[s] for s in SPLITS)
            + " |",
            "|---:|---:|" + "---:|" * len(SPLITS),
        ]
        for r in sorted(rows, key=lambda r: r["last_layer"]):
            cells = " | ".join(f"{100 * r['scores'][s]:.1f}" for s in SPLITS)
            lines.append(f"| {r['last_layer']} | {r['macs_removed_fraction']:.1%} | {cells} |")
        inside, outside = _chosen(rows, "validation_in_source"), _chosen(rows, "validation")
        lines += [
            "",
            f"{model}: chosen on in-source validation, layers 0-{inside}; on out-of-source "
            f"validation, layers 0-{outside}"
            + (" (the same)." if inside == outside else " (the choice flips)."),
            "",
        ]
    return lines


#: The recipe's questions, each as (question, the setting asked about, what it is weighed
#: against): decided on out-of-source validation, the test figure reported beside it.
# fmt: off
DECISIONS = (
    ("Masks on every layer, or cut to layers 0-2 first? (tiny.en, 50%)", "whisper-tiny.en mask_macs 0.5 layers 0-2", "whisper-tiny.en mask_macs 0.5"),
    ("Cut-first masks against the dense probe (tiny.en, 50%)", "whisper-tiny.en mask_macs 0.5 layers 0-2", "whisper-tiny.en linear_probe"),
    ("Cut-first masks against dropping the top 2 layers (tiny.en)", "whisper-tiny.en mask_macs 0.5 layers 0-2", "whisper-tiny.en drop_layers 2"),
    ("Timbre augmentation for the masks (tiny.en, layers 0-2, 50%)", "whisper-tiny.en mask_macs 0.5 layers 0-2 augment_db=6", "whisper-tiny.en mask_macs 0.5 layers 0-2"),
    ("Distillation to the dense encoder (tiny.en, layers 0-2, 50%)", "whisper-tiny.en mask_macs 0.5 layers 0-2 distill_weight=1", "whisper-tiny.en mask_macs 0.5 layers 0-2"),
    ("The classify recipe's default depth (`--last_layer auto`: layers 0-1, chosen by in-source probes) against masks on every layer (tiny.en, 50%)", "whisper-tiny.en mask_macs 0.5 layers 0-1", "whisper-tiny.en mask_macs 0.5"),
    ("Masks at dropping 3 layers' MACs (69%, layers 0-1) against the drop", "whisper-tiny.en mask_macs 0.69 layers 0-1", "whisper-tiny.en drop_layers 3"),
    ("Latency budget at 30% of dense with no depth cut against the same with layers 0-1", "whisper-tiny.en mask_latency 0.7", "whisper-tiny.en mask_latency 0.7 layers 0-1"),
    ("The default recipe's depth (layers 0-1, chosen by in-source probes), masks at 50%, against the dense probe", "whisper-tiny.en mask_macs 0.5 layers 0-1", "whisper-tiny.en linear_probe"),
    ("Masks at 75% of MACs (layers 0-1) against dropping the top 3 layers (69%)", "whisper-tiny.en mask_macs 0.75 layers 0-1", "whisper-tiny.en drop_layers 3"),
    ("Latency budget at 50% against the MACs budget at 50% (layers 0-1)", "whisper-tiny.en mask_latency 0.5 layers 0-1", "whisper-tiny.en mask_macs 0.5 layers 0-1"),
    ("Latency budget at 50% against dropping the top 2 layers", "whisper-tiny.en mask_latency 0.5 layers 0-1", "whisper-tiny.en drop_layers 2"),
    ("Latency budget at 25% of the dense latency against dropping the top 3 layers", "whisper-tiny.en mask_latency 0.75 layers 0-1", "whisper-tiny.en drop_layers 3"),
    ("Latency budget at dropping 3 layers' measured latency (30% of dense) against the drop", "whisper-tiny.en mask_latency 0.7 layers 0-1", "whisper-tiny.en drop_layers 3"),
    ("Lower mask rate (0.01) and longer warm-up (half the steps) (tiny.en, layers 0-1, 50%)", "whisper-tiny.en mask_macs 0.5 layers 0-1 mask_learning_rate=0.01 warmup_fraction=0.5", "whisper-tiny.en mask_macs 0.5 layers 0-1"),
    ("Head refit on the pruned model, 500 steps (tiny.en, layers 0-1, 50%)", "whisper-tiny.en mask_macs 0.5 layers 0-1 refit_head_steps=500", "whisper-tiny.en mask_macs 0.5 layers 0-1"),
    ("Latency budget priced on ONNX Runtime at 50% against dropping the top 2 layers", "whisper-tiny.en-ort mask_latency 0.5 layers 0-1", "whisper-tiny.en drop_layers 2"),
    ("Latency budget at 30% against the MACs budget at 75% (layers 0-1; both measured at 0.32 of the dense latency on torch)", "whisper-tiny.en mask_latency 0.7 layers 0-1", "whisper-tiny.en mask_macs 0.75 layers 0-1"),
    ("Distillation (distill_weight=1) in the latency budget at 30% (layers 0-1)", "whisper-tiny.en mask_latency 0.7 layers 0-1 distill_weight=1", "whisper-tiny.en mask_latency 0.7 layers 0-1"),
    ("Latency budget at 30% with distillation against dropping the top 3 layers", "whisper-tiny.en mask_latency 0.7 layers 0-1 distill_weight=1", "whisper-tiny.en drop_layers 3"),
    ("Latency budget priced on ONNX Runtime at 25%: meet_target against none", "whisper-tiny.en-ort mask_latency 0.75 layers 0-1 meet_target=True", "whisper-tiny.en-ort mask_latency 0.75 layers 0-1"),
    ("Latency budget priced on ONNX Runtime at 25%: meet_target, then the head refit 500 steps, against neither", "whisper-tiny.en-ort mask_latency 0.75 layers 0-1 meet_target=True refit_head_steps=500", "whisper-tiny.en-ort mask_latency 0.75 layers 0-1"),
    ("Whisper base cut to layers 0-2, masked to tiny.en's MACs, against tiny.en's probe", "whisper-base mask_macs 0.6112 layers 0-2", "whisper-tiny.en linear_probe"),
)
# fmt: on


def decisions_lines(settings: dict, examples: dict) -> list[str]:
    """The decision table: every question of `DECISIONS` whose two settings have run."""
    lines = [
        "### Decisions",
        "",
        "Each question weighs a setting against another on the out-of-source validation "
        "SoundFont (paired interval over clips and seeds); the out-of-source test SoundFont is "
        "reported, not chosen on. Adopted: the validation interval lies above 0.",
        "",
        "| question | seeds | out of source, val | decision | out of source, test |",
        "|---|---|---:|---|---:|",
    ]
    for question, asked, against in DECISIONS:
        if asked not in settings or against not in settings:
            continue
        a, b = settings[asked], settings[against]
        cells = [question, f"{len(a)} / {len(b)}", *_decision(a, b, examples)]
        lines.append(f"| {' | '.join(cells)} |")
    return lines + [""]


def sources_section(frontier: dict, probes: dict | None = None) -> list[str]:
    """The out-of-source section's lines.

    Args:
        frontier: `frontier_gm_sources.json`.
        probes: Its models' per-layer probes (`frontier.py --layer_probes`), or None.
    """
    settings = group(frontier["runs"])
    examples = frontier["examples"]
    lines = [
        "## Out of source: GM instruments across SoundFonts (`benchmarks/audio_data/gm_sources.py`)",
        "",
        f"Trained on {examples['train']} clips of the training SoundFonts' training pitches. In "
        f"source: the same SoundFonts' held-out pitches ({examples['validation_in_source']} "
        f"validation, {examples['test_in_source']} test clips). Out of source: every pitch of "
        f"a SoundFont never trained on, one for every choice ({examples['validation']} validation "
        f"clips) and one only reported ({examples['test']} test clips). "
        f"{frontier['window_s']} s window, batch {frontier['batch_size']}, head at "
        f"{frontier['learning_rate']:g}, 2000 steps, CPU. Accuracy in % as the mean over the "
        "seeds, the seed spread (max - min) in brackets.",
        "",
        "| setting | seeds | MACs removed | " + " | ".join(HEADERS[s] for s in SPLITS) + " |",
        "|---|---:|---:|" + "---:|" * len(SPLITS),
    ]
    for name, members in settings.items():
        removed = np.mean([r["macs_removed_fraction"] for r in members])
        cells = " | ".join(_cell(members, s) for s in SPLITS)
        lines.append(f"| {name} | {len(members)} | {removed:.1%} | {cells} |")
    lines += [
        "",
        "Against the same model's dense probe (all layers), percentage points, with a 95% "
        "interval from a bootstrap over the clips (paired) and each side's seeds:",
        "",
        "| setting | in source, val | out of source, val | out of source, test |",
        "|---|---:|---:|---:|",
    ]
    for name, members in settings.items():
        model = json.loads(members[0]["key"])["model"]
        probe = _probe_of(settings, model)
        if members is probe:
            continue
        cells = [
            _delta(members, probe, s, examples[s])
            for s in ("validation_in_source", "validation", "test")
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    inside, outside = _ranks(settings, "validation_in_source"), _ranks(settings, "validation")
    lines += [
        "",
        "Ranking of the settings by validation accuracy, in source against out of source "
        "(a decision flips where the order of two settings differs):",
        "",
        "| setting | rank in source | rank out of source |",
        "|---|---:|---:|",
    ]
    for name in sorted(settings, key=lambda n: inside[n]):
        lines.append(f"| {name} | {inside[name]} | {outside[name]} |")
    flips = [
        f"{a} / {b}"
        for a in settings
        for b in settings
        if inside[a] < inside[b] and outside[a] > outside[b]
    ]
    lines += ["", f"Pairs whose order flips out of source: {len(flips)}."]
    lines += [f"- {pair}" for pair in flips]
    lines += ["", *decisions_lines(settings, examples), *restarts_lines(settings)]
    return lines + (probes_section(probes) if probes else [])


def restarts_lines(settings: dict) -> list[str]:
    """Choosing among restarts on validation: for every masked setting run with 3 seeds or more,
    the out-of-source test accuracy of the seed best on validation against the seeds' mean (what
    one run gives on average) and the best seed on test (what no choice can beat)."""
    lines = [
        "### Restarts chosen on validation",
        "",
        "Train the masks with several seeds and keep the one best on the out-of-source validation "
        "SoundFont: its test accuracy against the mean over the seeds (one run) and the best "
        "seed on test.",
        "",
        "| setting | seeds | test, mean | test, seed chosen on validation | test, best seed |",
        "|---|---:|---:|---:|---:|",
    ]
    for name, members in settings.items():
        if len(members) < 3 or " mask_" not in name:
            continue
        tests = [100 * r["accuracy"]["test"] for r in members]
        chosen = max(members, key=lambda r: r["accuracy"]["validation"])
        lines.append(
            f"| {name} | {len(members)} | {np.mean(tests):.1f} | "
            f"{100 * chosen['accuracy']['test']:.1f} | {max(tests):.1f} |"
        )
    return lines + [""]


def multisource_lines(single: dict, multi: dict) -> list[str]:
    """Training on several SoundFonts against one: the same settings trained on the multi-source
    layout (`frontier_gm_multisource.json`) and on FluidR3 alone, compared on the out-of-source
    validation and test SoundFonts, whose clips are the same files in both layouts (paired).

    Args:
        single: `frontier_gm_sources.json` (trained on FluidR3).
        multi: `frontier_gm_multisource.json` (trained on FluidR3 and OPL-3 FM).
    """
    alone, several = group(single["runs"]), group(multi["runs"])
    examples = single["examples"]
    for split in ("validation", "test"):
        if multi["examples"][split] != examples[split]:
            raise ValueError(f"the two layouts' {split} splits differ: they cannot be paired")
    lines = [
        "### Training on several SoundFonts",
        "",
        f"The same settings trained on FluidR3 and the OPL-3 FM SoundFont "
        f"({multi['examples']['train']} training clips, `gm_sources.py --train fluidr3 opl3_fm`) "
        f"against FluidR3 alone ({examples['train']}), on the same out-of-source SoundFonts "
        "(the same clips: paired). Adopted: the validation interval lies above 0.",
        "",
        "| setting | seeds | one source, val | several, val | several - one, val | decision "
        "| one source, test | several, test | several - one, test |",
        "|---|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for name, members in several.items():
        if name not in alone:
            continue
        base = alone[name]
        gap_val, verdict, gap_test = _decision(members, base, examples)
        cells = [
            f"{len(members)} / {len(base)}",
            _cell(base, "validation"),
            _cell(members, "validation"),
            gap_val,
            verdict,
            _cell(base, "test"),
            _cell(members, "test"),
            gap_test,
        ]
        lines.append(f"| {name} | {' | '.join(cells)} |")
    return lines + [""]
