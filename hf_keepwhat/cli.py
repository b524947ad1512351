"""The `keepwhat` command: prune an adapter, report what an artifact keeps, regenerate its card,
push it to the Hub.

    keepwhat prune out/target0.50/adapter out/pruned
    keepwhat report out/pruned
    keepwhat card out/pruned --dataset fsdd --metric accuracy=0.98
    keepwhat push out/pruned me/whisper-tiny-digits-keep50
    keepwhat bench out/pruned --batch_size 8 --json out/pruned-bench.json
    keepwhat export out/pruned out/pruned-onnx --onnx --int8
    keepwhat profile-latency openai/whisper-tiny.en --runtime onnxruntime --out latency.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys

from .adapter import ADAPTER_CONFIG_FILE, adapter_card
from .cards import layer_table, pruned_model_card
from .files import read_json, write_json
from .layouts import AUTO_CLASS_OF
from .runtime import CLASS_PREFIX, MODEL_TYPE_PREFIX
from .standalone import RECORD_KEY


def _kind(path: str) -> str:
    if os.path.isfile(os.path.join(path, ADAPTER_CONFIG_FILE)):
        return "adapter"
    config = os.path.join(path, "config.json")
    if os.path.isfile(config) and RECORD_KEY in read_json(config):
        return "pruned"
    raise SystemExit(
        f"error: {path} holds neither a mask adapter ({ADAPTER_CONFIG_FILE}) nor a pruned model "
        "(config.json with a keepwhat record)."
    )


def _record(path: str) -> tuple[dict, str, bool]:
    """The artifact's record, its Auto class, and whether it loads with stock classes."""
    if _kind(path) == "adapter":
        saved = read_json(os.path.join(path, ADAPTER_CONFIG_FILE))
        return saved, AUTO_CLASS_OF.get(saved["model_class"], "AutoModel"), False
    config = read_json(os.path.join(path, "config.json"))
    stock_name = config["architectures"][0].removeprefix(CLASS_PREFIX)
    stock = not config["model_type"].startswith(MODEL_TYPE_PREFIX)
    return config[RECORD_KEY], AUTO_CLASS_OF.get(stock_name, "AutoModel"), stock


def _card(path: str, repo_id: str | None):
    record, auto, stock = _record(path)
    if _kind(path) == "pruned":
        return pruned_model_card(record, auto, stock, repo_id)
    return adapter_card(record, repo_id)


def cmd_prune(args) -> None:
    """Applies a saved adapter (folder or Hub id) to its base model, prunes, saves the
    standalone model. The adapter is data: the base class must be a supported stock class and
    only head settings pass to `from_pretrained`, so no code from the adapter or its base runs."""
    import transformers

    from .adapter import base_model_class, base_model_kwargs, resolve_adapter
    from .model import MaskModel

    hub = {"revision": args.revision, "token": args.token, "cache_dir": args.cache_dir}
    folder = resolve_adapter(args.adapter, **hub)
    saved = read_json(os.path.join(folder, ADAPTER_CONFIG_FILE))
    base = args.base or saved.get("base_model")
    if not base:
        raise SystemExit("error: the adapter does not record its base model; pass --base.")
    model_class = getattr(transformers, base_model_class(saved))
    revision = None if args.base else saved.get("base_model_revision")
    model = model_class.from_pretrained(base, revision=revision, **base_model_kwargs(saved))
    pruned = MaskModel.from_pretrained(model, folder).prune()
    pruned.save_pretrained(args.output)
    print(f"pruned model saved to {args.output}")
    _print_report(pruned.keepwhat_record["report"])


def _print_report(report: dict) -> None:
    total = report["total"]
    print(
        f"backbone parameters: {total['params_original']:,} -> {total['params_remaining']:,} "
        f"({total['params_removed_fraction']:.1%} removed)"
    )
    print(
        f"backbone MACs ({report.get('macs_input', 'reference input')}): {total['macs_original']:,} "
        f"-> {total['macs_remaining']:,} ({total['macs_removed_fraction']:.1%} removed)"
    )
    print(f"units kept: {total['units_kept']} of {total['units_total']}")
    passed_through = total.get("layers_passed_through")
    if passed_through:
        print(f"layers passed through (x + bias): {', '.join(passed_through)}")
    print()
    print(layer_table(report["groups"]))


def cmd_report(args) -> None:
    """Prints what a pruned model or adapter (folder or Hub id) keeps, per layer."""
    from .hub import resolve_folder

    args.path = resolve_folder(
        args.path,
        "hf_keepwhat artifact",
        allow_patterns=["config.json", ADAPTER_CONFIG_FILE],
        revision=args.revision,
        cache_dir=args.cache_dir,
    )
    record, _, _ = _record(args.path)
    print(f"{_kind(args.path)} of {record.get('base_model')}")
    _print_report(record["report"])


def cmd_card(args) -> None:
    """Regenerates README.md from the artifact's record (optionally adding dataset/metrics)."""
    path = args.path
    if _kind(path) == "pruned" and (args.dataset or args.metric or args.license):
        config_file = os.path.join(path, "config.json")
        config = read_json(config_file)
        card = dict(config[RECORD_KEY].get("card", {}))
        if args.dataset:
            card["dataset"] = args.dataset
        if args.license:
            card["license"] = args.license
        if args.metric:
            card["metrics"] = {**card.get("metrics", {}), **dict(_metric(m) for m in args.metric)}
        config[RECORD_KEY]["card"] = card
        write_json(config_file, config)
    card = _card(path, args.repo_id)
    card.save(os.path.join(path, "README.md"))
    print(f"wrote {os.path.join(path, 'README.md')}")


def _metric(text: str) -> tuple[str, float]:
    name, _, value = text.partition("=")
    try:
        return name, float(value)
    except ValueError:
        raise SystemExit(
            f"error: --metric takes NAME=VALUE, e.g. accuracy=0.98; got {text!r}"
        ) from None


def cmd_push(args) -> None:
    """Uploads a saved artifact folder, with its card naming the repository."""
    from .hub import push_folder

    def save(folder):
        for name in os.listdir(args.path):
            source = os.path.join(args.path, name)
            if os.path.isfile(source):
                shutil.copy2(source, os.path.join(folder, name))
        _card(args.path, args.repo_id).save(os.path.join(folder, "README.md"))

    url = push_folder(save, args.repo_id, args.private, args.token)
    print(f"pushed {args.path} to {url}")


def _load_saved(path: str, device: str = "cpu"):
    """A model saved with `save_pretrained` (dense or pruned), by its Auto class, in eval mode."""
    import transformers

    config = read_json(os.path.join(path, "config.json"))
    stock_name = config["architectures"][0].removeprefix(CLASS_PREFIX)
    auto = getattr(transformers, AUTO_CLASS_OF.get(stock_name, "AutoModel"))
    return auto.from_pretrained(path).to(device).eval()


def _example_inputs(model, seconds: float, batch_size: int, device: str = "cpu"):
    """Random inputs shaped as the layout's reference input (Whisper: its window; others:
    `seconds` of audio), batched, and the layout."""
    import torch

    from .config import MaskConfig
    from .layouts import get_layout

    layout = get_layout(model, MaskConfig(macs_input_seconds=seconds))
    generator = torch.Generator().manual_seed(0)
    inputs = {
        name: torch.randn((batch_size, *value.shape[1:]), generator=generator).to(device)
        for name, value in layout.reference_inputs().items()
    }
    return inputs, layout


def cmd_bench(args) -> None:
    """Measures a saved model (dense or pruned): parameters, MACs, disk size and latency."""
    from .profiling import count_macs, count_params, disk_size, measure_latency

    model = _load_saved(args.path, args.device)
    inputs, layout = _example_inputs(model, args.seconds, args.batch_size, args.device)
    backbone = layout.backbone
    result = {
        "path": args.path,
        "model_class": type(model).__name__,
        "input": {name: list(value.shape) for name, value in inputs.items()},
        "params": count_params(model),
        "backbone_params": count_params(backbone),
        "macs": count_macs(model, inputs),
        "backbone_macs": count_macs(backbone, inputs),
        "disk_bytes": disk_size(args.path),
        "latency": measure_latency(
            model, inputs, warmup=args.warmup, repeats=args.repeats, threads=args.threads
        ),
    }
    if args.json:
        write_json(args.json, result)
    for key, value in result.items():
        print(f"{key}: {value:,}" if isinstance(value, int) else f"{key}: {value}")


def cmd_export(args) -> None:
    """Exports a saved model (dense or pruned) to ONNX, checked with ONNX Runtime; the
    feature extractor is copied beside the graph."""
    from .export import export_onnx

    model = _load_saved(args.path)
    inputs, _ = _example_inputs(model, args.seconds, 1)
    result = export_onnx(
        model, args.output, inputs, opset_version=args.opset, atol=args.atol, int8=args.int8
    )
    extractor = os.path.join(args.path, "preprocessor_config.json")
    if os.path.isfile(extractor):
        shutil.copy(extractor, args.output)
    write_json(os.path.join(args.output, "keepwhat_export.json"), result)
    print(f"exported {args.path} to {os.path.join(args.output, result['onnx_file'])}")
    print(f"ONNX Runtime vs PyTorch, largest difference: {result['max_abs_difference']:.3g}")
    if args.int8:
        print(
            f"int8 graph: {result['int8_file']} (difference {result['int8_max_abs_difference']:.3g})"
        )


def _load_for_profiling(path: str):
    """The model to profile, as it is deployed for a task: a stock checkpoint through
    AutoModelForAudioClassification (its new head is timed, its weights do not matter), a saved
    hf_keepwhat or task model by its own class."""
    import transformers
    from transformers.utils import logging as hf_logging

    previous = hf_logging.get_verbosity()
    # The load report (a seq2seq decoder left out, a new head) is expected: weights do not matter.
    hf_logging.set_verbosity_error()
    try:
        if os.path.isfile(os.path.join(path, "config.json")):
            architecture = read_json(os.path.join(path, "config.json"))["architectures"][0]
            stock = architecture.removeprefix(CLASS_PREFIX)
            if stock in AUTO_CLASS_OF and not stock.endswith("ConditionalGeneration"):
                return _load_saved(path)
        return transformers.AutoModelForAudioClassification.from_pretrained(path).eval()
    finally:
        hf_logging.set_verbosity(previous)


def cmd_profile_latency(args) -> None:
    """Times pruned variants of a model on a runtime and writes the fitted latency table that
    `MaskConfig(budget="latency", latency_table=...)` and `--budget latency` read."""
    from .latency_profile import profile_latency
    from .tasks.provenance import provenance

    table = profile_latency(
        _load_for_profiling(args.model),
        runtime=args.runtime,
        threads=args.threads,
        batch_size=args.batch_size,
        seconds=args.seconds,
        device=args.device,
        unit_kinds=args.unit_kinds,
        variants=args.variants,
        rounds=args.rounds,
        repeats=args.repeats,
        seed=args.seed,
        name=os.path.basename(os.path.normpath(args.model)),
    )
    write_json(args.out, {**table, "provenance": provenance()})
    fit = table["fit"]
    print(f"latency table written to {args.out} ({table['runtime']}, {table['threads']} threads)")
    print(
        f"dense: measured {table['dense_ms']:.3f} ms, predicted {table['dense_predicted_ms']:.3f} ms"
    )
    print(
        f"held-out variants: {fit['held_out']}, median error {fit['median_relative_error']:.1%}, "
        f"largest {fit['max_relative_error']:.1%}"
    )
    for name, value in table["coefficients"].items():
        print(f"  {name}: {value:.4g} ms")


def _add_prune_command(sub) -> None:
    """`keepwhat prune`."""
    p = sub.add_parser("prune", help="adapter -> pruned standalone model")
    p.add_argument("adapter", help="folder written by MaskModel.save_pretrained, or a Hub id")
    p.add_argument("output", help="folder for the pruned model")
    p.add_argument("--base", help="base model (default: the one the adapter records)")
    p.add_argument("--revision", help="revision of a Hub adapter")
    p.add_argument("--token", help="Hub token for a private adapter")
    p.add_argument("--cache_dir", help="Hub cache to read the adapter from")
    p.set_defaults(func=cmd_prune)


def _add_report_command(sub) -> None:
    """`keepwhat report`."""
    p = sub.add_parser("report", help="what a pruned model or adapter keeps, per layer")
    p.add_argument("path", help="a saved folder or a Hub id")
    p.add_argument("--revision", help="revision of a Hub artifact")
    p.add_argument("--cache_dir", help="Hub cache to read it from")
    p.set_defaults(func=cmd_report)


def _add_card_command(sub) -> None:
    """`keepwhat card`."""
    p = sub.add_parser("card", help="regenerate the model card (README.md)")
    p.add_argument("path")
    p.add_argument("--repo_id", help="Hub id the loading snippet names")
    p.add_argument("--dataset", help="dataset id to record (pruned models)")
    p.add_argument(
        "--metric", action="append", help="NAME=VALUE to record (pruned models), repeatable"
    )
    p.add_argument("--license", help="license to record (pruned models)")
    p.set_defaults(func=cmd_card)


def _add_push_command(sub) -> None:
    """`keepwhat push`."""
    p = sub.add_parser("push", help="upload a saved artifact to the Hub")
    p.add_argument("path")
    p.add_argument("repo_id")
    p.add_argument("--private", action="store_true", help="create the repository as private")
    p.add_argument("--token", help="Hub token (default: the stored login)")
    p.set_defaults(func=cmd_push)


def _add_bench_command(sub) -> None:
    """`keepwhat bench`."""
    p = sub.add_parser("bench", help="parameters, MACs, disk size and latency of a saved model")
    p.add_argument("path", help="a folder written by save_pretrained (dense or pruned)")
    p.add_argument("--seconds", type=float, default=1.0, help="input length (not Whisper)")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    p.add_argument("--threads", type=int, help="CPU threads (default: torch's)")
    p.add_argument("--repeats", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--json", help="also write the figures to this JSON file")
    p.set_defaults(func=cmd_bench)


def _add_export_command(sub) -> None:
    """`keepwhat export`."""
    p = sub.add_parser("export", help="a saved model as an ONNX graph, checked with ONNX Runtime")
    p.add_argument("path", help="a folder written by save_pretrained (dense or pruned)")
    p.add_argument("output", help="folder for model.onnx, config and feature extractor")
    formats = p.add_mutually_exclusive_group(required=True)
    formats.add_argument("--onnx", action="store_true", help="export to ONNX (torch.onnx)")
    p.add_argument("--seconds", type=float, default=1.0, help="traced input length (not Whisper)")
    p.add_argument("--opset", type=int, help="ONNX opset (default: torch.onnx's)")
    p.add_argument("--atol", type=float, default=1e-4, help="allowed difference from PyTorch")
    p.add_argument("--int8", action="store_true", help="also write ONNX Runtime's int8 graph")
    p.set_defaults(func=cmd_export)


def _add_profile_latency_command(sub) -> None:
    """`keepwhat profile-latency`."""
    p = sub.add_parser(
        "profile-latency", help="time pruned variants on a runtime: the latency budget's table"
    )
    p.add_argument("model", help="a Hub id or folder (stock, task or pruned model)")
    p.add_argument("--runtime", choices=["torch", "onnxruntime"], default="torch")
    p.add_argument("--threads", type=int, help="intra-op threads (default: torch's)")
    p.add_argument("--batch_size", type=int, default=1)
    p.add_argument("--seconds", type=float, default=1.0, help="input window, as the run's")
    p.add_argument("--device", default="cpu", help="cpu or cuda (torch only)")
    p.add_argument("--unit_kinds", nargs="+", default=["heads", "ffn", "conv"])
    p.add_argument("--variants", type=int, default=48, help="pruned shapes timed, half held out")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds over the variants")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per variant per round")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="latency.json")
    p.set_defaults(func=cmd_profile_latency)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the `keepwhat` command."""
    parser = argparse.ArgumentParser(prog="keepwhat", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    _add_prune_command(sub)
    _add_report_command(sub)
    _add_card_command(sub)
    _add_push_command(sub)
    _add_bench_command(sub)
    _add_export_command(sub)
    _add_profile_latency_command(sub)
    return parser


def main(argv: list[str] | None = None) -> None:
    """Runs the `keepwhat` command.

    Args:
        argv: Arguments (default: `sys.argv[1:]`).
    """
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, RuntimeError, ImportError) as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
