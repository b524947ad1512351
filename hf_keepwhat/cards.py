"""Model cards for both artifact kinds, rendered with huggingface_hub from `model_cards/`.

Everything a card states comes from the artifact's own record (`config.keepwhat` for a pruned
model, the adapter config for a mask adapter): nothing is typed by hand.
"""

from __future__ import annotations

import json
import os
from collections import OrderedDict

from huggingface_hub import EvalResult, ModelCard, ModelCardData

TEMPLATES = os.path.join(os.path.dirname(__file__), "model_cards")

# Auto class -> (pipeline tag, what the task is called in prose).
TASKS = {
    "AutoModelForAudioClassification": ("audio-classification", "audio classification"),
    "AutoModelForCTC": ("automatic-speech-recognition", "speech recognition (CTC)"),
    "AutoModel": ("feature-extraction", "feature extraction"),
}


def base_model_license(base_model: str | None) -> str | None:
    """The `license` of the base model's card, when its card can be read (local or cached).

    Args:
        base_model: The base model's Hub id or local folder.
    """
    if not base_model:
        return None
    try:
        if os.path.isdir(base_model):
            readme = os.path.join(base_model, "README.md")
            if not os.path.isfile(readme):
                return None
            card = ModelCard.load(readme)
        else:
            card = ModelCard.load(base_model)
    except Exception:  # offline, gated, no card: the card then says nothing about the license
        return None
    return getattr(card.data, "license", None)


def _count(value: float) -> str:
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.2f}{unit}"
    return str(int(value))


def layer_table(groups: list[dict]) -> str:
    """A Markdown table with one row per layer: kept/total units of each kind, params, MACs.

    Args:
        groups: The `groups` rows of a sparsity report.
    """
    layers: OrderedDict[str, dict] = OrderedDict()
    kinds = []
    for row in groups:
        layer = row["name"].rpartition(".")[0]
        entry = layers.setdefault(
            layer, {"kept_params": 0, "removed_params": 0, "kept_macs": 0, "removed_macs": 0}
        )
        entry[row["kind"]] = f"{row['kept_units']}/{row['num_units']}"
        for key in ("kept_params", "removed_params", "kept_macs", "removed_macs"):
            entry[key] += row[key]
        if row["kind"] not in kinds:
            kinds.append(row["kind"])
    header = ["layer", *[f"{k} kept" for k in kinds], "params kept", "params removed", "MACs kept"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for layer, entry in layers.items():
        cells = [f"`{layer}`", *[entry.get(k, "-") for k in kinds]]
        cells += [
            _count(entry["kept_params"]),
            _count(entry["removed_params"]),
            _count(entry["kept_macs"]),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def metrics_table(card_info: dict) -> str:
    """The card's metric rows: each value, with its 95% interval and the number of examples it
    was measured on where the record has them.

    Args:
        card_info: The record's `card` (`metrics`, optional `intervals` and `test_examples`).
    """
    intervals = card_info.get("intervals") or {}
    examples = card_info.get("test_examples")
    rows = []
    for name, value in (card_info.get("metrics") or {}).items():
        cell = f"{value:.4g}"
        if name in intervals:
            low, high = intervals[name]
            cell += f" (95% interval {low:.3f}-{high:.3f}"
            cell += f", {examples} test examples)" if examples else ")"
        rows.append(f"| {name} | {cell} |")
    return "\n".join(rows)


def _card_data(record: dict, template: str, pipeline_tag, model_name: str) -> ModelCardData:
    """The card's YAML metadata: base model, license, task, dataset and evaluation results."""
    card_info = record.get("card", {})
    base_model = record.get("base_model")
    on_hub = bool(base_model) and not os.path.exists(base_model)
    metrics = card_info.get("metrics") or {}
    dataset = card_info.get("dataset")
    eval_results = None
    if metrics and dataset and pipeline_tag:
        eval_results = [
            EvalResult(
                task_type=pipeline_tag,
                dataset_type=dataset,
                dataset_name=dataset,
                metric_type=name,
                metric_value=value,
            )
            for name, value in metrics.items()
        ]
    return ModelCardData(
        base_model=base_model if on_hub else None,
        library_name="transformers",
        # Looked up when a card is written, never while pruning; offline it says nothing.
        license=card_info.get("license") or record.get("license") or base_model_license(base_model),
        pipeline_tag=pipeline_tag,
        tags=["hf_keepwhat", "pruned" if template == "pruned_model.md" else "mask-adapter"],
        datasets=[dataset] if dataset else None,
        model_name=model_name,
        eval_results=eval_results,
    )


def after_training_notes(record: dict) -> str:
    """Markdown paragraphs on what was done between mask training and pruning (the budget met
    by training on or by switching units off, the head trained again), from the record's
    `target_trained`, `target_met` and `head_refit`; empty when none was done.

    Args:
        record: A pruning record or adapter config.
    """
    notes = []
    budget = {"macs": "MACs", "params": "parameters"}.get(
        record["mask_config"].get("budget"), "units"
    )
    trained = record.get("target_trained")
    if trained:
        aims = ", ".join(f"{aim:.1%}" for aim in trained["aims"])
        notes.append(
            f"Mask training stopped at {trained['realised_before']:.1%} of the backbone's "
            f"{budget} removed, short of the {trained['target']:.1%} target; masks and head were "
            f"then trained on for {trained['steps']} steps in {len(trained['aims'])} round(s), "
            f"the penalty pulling towards {aims} removed, which left {trained['realised']:.1%} "
            "removed."
        )
    met = record.get("target_met")
    if met:
        which = (
            "with the lowest keep probability among those no costlier than the shortfall (then "
            "the others)"
            if met.get("selection") == "fit_the_gap"
            else "with the lowest keep probability"
        )
        if met.get("unit_kinds"):
            which += f" (of the kinds {', '.join(met['unit_kinds'])} only)"
        # After training on, the shortfall is the one that training left, already stated above.
        stopped = "Training" if trained else "Mask training"
        notes.append(
            f"{stopped} stopped at {met['realised_before']:.1%} of the backbone's {budget} "
            f"removed, short of the {met['target']:.1%} target; the "
            f"{met['units_switched_off']} kept units {which} were then switched off, leaving "
            f"{met['realised']:.1%} removed."
        )
    config = record["mask_config"]
    if config.get("train_backbone"):
        notes.append(
            "The backbone's weights trained with the masks (learning rate "
            f"{config.get('backbone_learning_rate')}): unlike masks alone, the kept weights "
            "differ from the base model's."
        )
    refit = record.get("head_refit")
    if refit:
        notes.append(
            "After mask training, the task head was trained again on the kept units with the "
            f"masks frozen ({refit['steps']} steps at learning rate {refit['learning_rate']}); "
            "the backbone weights are the base model's."
        )
    return "\n\n".join(notes)


def _report_fields(record: dict) -> dict:
    """The template's figures: kept and removed parameters and MACs, metrics, per-layer table."""
    total = record["report"]["total"]
    return {
        "params_original": _count(total["params_original"]),
        "params_remaining": _count(total["params_remaining"]),
        "params_removed": f"{total['params_removed_fraction']:.1%}",
        "macs_original": _count(total["macs_original"]),
        "macs_remaining": _count(total["macs_remaining"]),
        "macs_removed": f"{total['macs_removed_fraction']:.1%}",
        "macs_input": record["report"].get("macs_input", "reference input"),
        "metrics_table": metrics_table(record.get("card", {})),
        "layer_table": layer_table(record["report"]["groups"]),
        "layers_passed_through": ", ".join(
            f"`{path}`" for path in total.get("layers_passed_through", [])
        ),
        "latency": {
            "runtime": total["latency_runtime"],
            "original": f"{total['latency_ms_original']:.3g} ms",
            "remaining": f"{total['latency_ms_remaining']:.3g} ms",
            "removed": f"{total['latency_removed_fraction']:.1%}",
        }
        if "latency_ms_remaining" in total
        else None,
        "mask_config": json.dumps(record["mask_config"], indent=2, sort_keys=True),
        "recovery": record.get("recovery"),
        "after_training": after_training_notes(record),
    }


def python_string(text: str) -> str:
    """`text` as a Python string literal, for the cards' code snippets (a name with a quote or
    a backslash must not break, or inject into, the snippet a user copies)."""
    return json.dumps(text)


def render_card(
    template: str,
    record: dict,
    *,
    auto_class: str,
    repo_id: str | None = None,
    load_instructions: str = "",
    base_load_kwargs: str = "",
) -> ModelCard:
    """Renders a card from an artifact's record.

    Args:
        template: `"pruned_model.md"` or `"mask_adapter.md"`.
        record: The artifact's record: `base_model`, `mask_config`, `report` (a sparsity report
            with `macs_input`), and optionally `card` (`dataset`, `metrics`, `license`,
            `task_description`), `target_met` and `head_refit` (`after_training_notes`) and
            `recovery` (LoRA recovery applied after pruning).
        auto_class: The Auto class that loads the artifact (or its base model).
        repo_id: Where the artifact is (to be) published, for the loading snippet.
        load_instructions: Markdown telling how to load a pruned model.
        base_load_kwargs: Extra arguments in the adapter card's base-model loading line.
    """
    base_model = record.get("base_model")
    if base_model and not os.path.exists(base_model):
        base_model_link = f"[{base_model}](https://huggingface.co/{base_model})"
    else:
        base_model_link = f"`{base_model}`" if base_model else "a model of unrecorded origin"
    pipeline_tag, task_prose = TASKS.get(auto_class, (None, "its task"))
    stem = os.path.basename(os.path.normpath(base_model)) if base_model else "model"
    model_name = repo_id.split("/")[-1] if repo_id else f"{stem}-keepwhat"
    return ModelCard.from_template(
        _card_data(record, template, pipeline_tag, model_name),
        template_path=os.path.join(TEMPLATES, template),
        model_name=model_name,
        base_model_link=base_model_link,
        base_model_literal=python_string(base_model or "BASE_MODEL"),
        task_description=record.get("card", {}).get("task_description") or task_prose,
        load_instructions=load_instructions,
        auto_class=auto_class,
        repo_id_literal=python_string(repo_id or "path/to/this/folder"),
        base_load_kwargs=base_load_kwargs,
        **_report_fields(record),
    )


def pruned_model_card(
    record: dict,
    auto_class: str,
    stock: bool,
    repo_id: str | None = None,
    feature_extractor: str | None = None,
) -> ModelCard:
    """The card of a pruned model.

    Args:
        record: The model's pruning record (`config.keepwhat`).
        auto_class: The Auto class that loads it.
        stock: Whether it was saved with a stock config (then no custom code is needed).
        repo_id: Where it is (to be) published, for the loading snippet.
        feature_extractor: The class name of its feature extractor when that is hf_keepwhat's
            own (a Whisper window of a fraction of a second), else None.
    """
    name = python_string(repo_id or "path/to/this/folder")
    if stock:
        how = (
            "The pruned shapes fit the stock config, so plain transformers loads it, no custom "
            f"code:\n\n```python\nfrom transformers import {auto_class}\n\n"
            f"model = {auto_class}.from_pretrained({name})\n```"
        )
    else:
        how = (
            "With hf_keepwhat installed (it registers the pruned classes):\n\n"
            f"```python\nimport hf_keepwhat\nfrom transformers import {auto_class}\n\n"
            f"model = {auto_class}.from_pretrained({name})\n```\n\n"
            "With plain transformers, using the modeling file shipped next to the weights:\n\n"
            f"```python\nmodel = {auto_class}.from_pretrained({name}, trust_remote_code=True)\n```"
        )
    if feature_extractor is not None:
        how += (
            f"\n\nIts feature extractor is hf_keepwhat's `{feature_extractor}` (the stock class "
            "cannot pad to a window of a fraction of a second): load it with "
            f"`AutoFeatureExtractor.from_pretrained({name})` after `import hf_keepwhat`, or with "
            "`trust_remote_code=True`; `WhisperFeatureExtractor.from_pretrained` would not work."
        )
    return render_card(
        "pruned_model.md", record, auto_class=auto_class, repo_id=repo_id, load_instructions=how
    )
