"""Pruned standalone models: what `MaskModel.prune()` returns, how it saves, loads and publishes.

The classes here add saving, checking and publishing to the self-contained classes of
`modeling_pruned` (which only know how to rebuild shapes). `save_pretrained` writes:
- a stock config (no custom code at all) when one describes the pruned shapes: only whole layers
  dropped, a shorter Whisper window, per-layer `conv_dim`, uniform FFN widths;
- otherwise a `keepwhat-<type>` config with the shape manifest, plus `modeling_pruned.py` named in
  `auto_map`, so that `trust_remote_code=True` loads it without hf_keepwhat;
and, in both cases, `model.safetensors`, the feature extractor and a model card.
"""

from __future__ import annotations

import os
import shutil

import torch
from transformers import (
    AutoConfig,
    AutoModel,
    AutoModelForAudioClassification,
    AutoModelForCTC,
    PreTrainedModel,
)

from . import modeling_pruned
from .cards import pruned_model_card
from .files import (
    atomic_directory,
    check_shape_counts,
    check_shapes,
    read_json,
    require_file,
    safetensors_shapes,
    write_json,
)
from .hub import push_folder
from .layouts import get_layout
from .modeling_pruned import (
    AUTO_CLASS_OF,
    FAMILIES,
    MANIFEST_KEY,
    PRUNED_CONFIGS,
    PRUNED_MODELS,
    describe_module,
)

RECORD_KEY = "keepwhat"
MODELING_FILE = "modeling_pruned.py"
WEIGHTS_FILE = "model.safetensors"
OWNED_FILES = ("config.json", WEIGHTS_FILE, MODELING_FILE, "README.md")
AUTO_CLASSES = {
    "AutoModel": AutoModel,
    "AutoModelForAudioClassification": AutoModelForAudioClassification,
    "AutoModelForCTC": AutoModelForCTC,
}


def _state_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


class PrunedModelMixin:
    """Saving, checking and publishing for pruned models (mixed into each pruned class)."""

    _keepwhat_stock_class: type[PreTrainedModel]
    #: The feature extractor saved with the model (set by `MaskModel.prune`).
    keepwhat_feature_extractor = None

    @property
    def keepwhat_record(self) -> dict:
        """What was pruned: base model, MaskConfig, sparsity report (saved in `config.json`)."""
        return getattr(self.config, RECORD_KEY, None) or {}

    def set_card_info(
        self,
        *,
        dataset: str | None = None,
        metrics: dict[str, float] | None = None,
        license: str | None = None,
        task_description: str | None = None,
    ) -> None:
        """Records what the model card should state beyond the pruning record.

        Args:
            dataset: The dataset id the masks were trained and evaluated on.
            metrics: Measured metrics of this pruned model, e.g. `{"accuracy": 0.98}`.
            license: Overrides the license inherited from the base model.
            task_description: The task in words, e.g. "spoken digit classification".
        """
        card = dict(self.keepwhat_record.get("card", {}))
        given = {"dataset": dataset, "metrics": metrics, "license": license}
        given["task_description"] = task_description
        card.update({k: v for k, v in given.items() if v is not None})
        setattr(self.config, RECORD_KEY, {**self.keepwhat_record, "card": card})

    @property
    def auto_class_name(self) -> str:
        """The Auto class that loads this model (e.g. `AutoModelForAudioClassification`)."""
        return AUTO_CLASS_OF[self._keepwhat_stock_class.__name__]

    def stock_config(self):
        """A stock config that describes every shape of this model, or None when none does."""
        stock_class = self._keepwhat_stock_class
        data = self.config.to_dict()
        for key in (MANIFEST_KEY, "auto_map", "architectures", "model_type"):
            data.pop(key, None)
        data.update(get_layout(self).stock_config_updates(self))
        config = stock_class.config_class.from_dict(data)
        with torch.device("meta"):
            candidate = stock_class(config)
        return config if _state_shapes(candidate) == _state_shapes(self) else None

    def model_card(self, repo_id: str | None = None):
        """The model card (a `huggingface_hub.ModelCard`) generated from the pruning record.

        Args:
            repo_id: Where the model is (to be) published, for the loading snippet.
        """
        stock = self.stock_config() is not None
        return pruned_model_card(self.keepwhat_record, self.auto_class_name, stock, repo_id)

    def save_pretrained(self, save_directory, *args, repo_id: str | None = None, **kwargs):
        """Saves config, weights, feature extractor and model card, all or nothing.

        Args:
            save_directory: The folder; files of an earlier save there are replaced only once the
                new ones are completely written.
            repo_id: Hub id the card's loading snippet names (else a placeholder).
            *args: Passed to `PreTrainedModel.save_pretrained`.
            **kwargs: Passed to `PreTrainedModel.save_pretrained` (`push_to_hub` is not: use
                `push_to_hub()`, which uploads this card rather than a generic one).
        """
        if kwargs.pop("push_to_hub", False):
            raise ValueError("Call model.push_to_hub(repo_id) to publish a pruned model.")
        stock = self.stock_config()
        with atomic_directory(save_directory, OWNED_FILES) as staging:
            if stock is not None:
                saved_config, self.config = self.config, stock
                try:
                    super().save_pretrained(staging, *args, **kwargs)
                finally:
                    self.config = saved_config
                self._rewrite_config(staging, architectures=[self._keepwhat_stock_class.__name__])
            else:
                super().save_pretrained(staging, *args, **kwargs)
                self._rewrite_config(staging, auto_map=self._auto_map())
                shutil.copyfile(modeling_pruned.__file__, os.path.join(staging, MODELING_FILE))
            if self.keepwhat_feature_extractor is not None:
                self.keepwhat_feature_extractor.save_pretrained(staging)
            self.model_card(repo_id).save(os.path.join(staging, "README.md"))

    def _auto_map(self) -> dict:
        module = MODELING_FILE.removesuffix(".py")
        model_type = self.config.model_type.removeprefix(modeling_pruned.MODEL_TYPE_PREFIX)
        auto_map = {"AutoConfig": f"{module}.{type(self.config).__name__}"}
        for stock_name, auto in FAMILIES[model_type][1]:
            # A task model's folder also loads as the bare model (AutoModel), as stock ones do.
            if stock_name == self._keepwhat_stock_class.__name__ or auto == "AutoModel":
                auto_map[auto] = f"{module}.{modeling_pruned._class_name(stock_name)}"
        return auto_map

    @staticmethod
    def _rewrite_config(directory: str, **updates) -> None:
        path = os.path.join(directory, "config.json")
        write_json(path, {**read_json(path), **updates})

    def push_to_hub(
        self, repo_id: str, *, private: bool = False, token: str | None = None, **kwargs
    ):
        """Saves the model with its card and uploads the folder to the Hub.

        Args:
            repo_id: The Hub repository, e.g. `"me/whisper-tiny-digits-keep50"`.
            private: Create the repository as private.
            token: Hub token; default: the one `hf auth login` stored.
            **kwargs: Passed to `HfApi.upload_folder` (e.g. `commit_message`, `revision`).
        """
        return push_folder(
            lambda folder: self.save_pretrained(folder, repo_id=repo_id),
            repo_id,
            private,
            token,
            **kwargs,
        )

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, **kwargs):
        """Loads a pruned model, first checking a local folder's files against its config.

        Args:
            pretrained_model_name_or_path: A folder written by `save_pretrained`, or a Hub id.
            *args: Passed to `PreTrainedModel.from_pretrained`.
            **kwargs: Passed to `PreTrainedModel.from_pretrained`.
        """
        path = os.fspath(pretrained_model_name_or_path)
        if os.path.isdir(path):
            cls.check_folder(path)
        return super().from_pretrained(path, *args, **kwargs)

    @classmethod
    def check_folder(cls, path: str) -> None:
        """Raises a clear error when a saved pruned model's files are missing, corrupt, or hold
        tensors whose shapes disagree with what its config records.

        Args:
            path: The folder.
        """
        config_file = require_file(path, "config.json", "pruned model")
        config = cls.config_class.from_dict(read_json(config_file))
        weights_file = require_file(path, WEIGHTS_FILE, "pruned model")
        found = safetensors_shapes(weights_file)
        with torch.device("meta"):
            expected = _state_shapes(cls(config))
        prefix = getattr(cls, "base_model_prefix", "") + "."
        if not any(k.startswith(prefix) for k in expected) and any(
            k.startswith(prefix) for k in found
        ):
            # A bare model read from a task model's folder: the head's tensors are not its own.
            found = {k[len(prefix) :]: v for k, v in found.items() if k.startswith(prefix)}
        if set(expected) <= set(found):
            check_shapes(expected, found, weights_file, "config.json")
        else:
            # transformers saved the weights under legacy names (its checkpoint conversion
            # mapping, e.g. AST): compare the shapes without the names.
            check_shape_counts(expected, found, weights_file, "config.json")


def _pruned_class(stock_name: str) -> type:
    base = PRUNED_MODELS[stock_name]
    namespace = {
        "__module__": __name__,
        "_keepwhat_stock_class": base.__mro__[1],
        "__doc__": base.__doc__,
    }
    return type(base.__name__, (PrunedModelMixin, base), namespace)


PRUNED_CLASSES = {stock_name: _pruned_class(stock_name) for stock_name in PRUNED_MODELS}


def register_auto_classes() -> None:
    """Registers the pruned configs and models with the Auto classes (done on import)."""
    for model_type, config_class in PRUNED_CONFIGS.items():
        AutoConfig.register(config_class.model_type, config_class, exist_ok=True)
        for stock_name, auto in FAMILIES[model_type][1]:
            AUTO_CLASSES[auto].register(config_class, PRUNED_CLASSES[stock_name], exist_ok=True)


def build_manifest(model: torch.nn.Module, groups, kept_units, pass_throughs=()) -> dict:
    """The shape manifest of a pruned model: every module pruning changed, and attributes.

    Args:
        model: The pruned model.
        groups: The unit groups that were pruned.
        kept_units: Kept unit indices of each group, in order.
        pass_throughs: Paths of the layers replaced by `PassThroughLayer`s.
    """
    modules = {path: describe_module(model.get_submodule(path)) for path in pass_throughs}
    attributes, parameters = {}, {}
    emptied = list(pass_throughs)
    for group, kept in zip(groups, kept_units, strict=True):
        if group.mask_module.startswith(tuple(path + "." for path in pass_throughs)):
            continue  # its layer is gone
        if len(kept) == 0 and group.empty_module is not None:
            emptied.append(group.empty_module)
            modules[group.empty_module] = describe_module(model.get_submodule(group.empty_module))
            continue
        paths = group.producers + group.norms + group.consumers + group.glu_producers
        for path in paths + group.depthwise:
            modules[path] = describe_module(model.get_submodule(path))
        for path in group.per_unit_tensors:
            module_path, _, name = path.rpartition(".")
            parameters[path] = list(getattr(model.get_submodule(module_path), name).shape)
        for path, per_unit in group.attributes.items():
            attributes[path] = {name: value * len(kept) for name, value in per_unit.items()}
    # Modules inside a replaced block no longer exist.
    inside = tuple(path + "." for path in emptied)
    modules = {p: s for p, s in modules.items() if not p.startswith(inside)}
    attributes = {
        p: a for p, a in attributes.items() if p not in emptied and not p.startswith(inside)
    }
    parameters = {p: shape for p, shape in parameters.items() if not p.startswith(inside)}
    return {"modules": modules, "attributes": attributes, "parameters": parameters}


def to_pruned_model(model: PreTrainedModel, manifest: dict, record: dict) -> PreTrainedModel:
    """Rebuilds a pruned stock instance as its pruned class, from config + manifest, and copies
    the weights into it; `load_state_dict(strict=True)` proves the manifest describes every shape.

    Args:
        model: The stock model after in-place pruning.
        manifest: Its shape manifest (`build_manifest`).
        record: What was pruned, saved under `config.keepwhat`.
    """
    stock_name = type(model).__name__
    if stock_name not in PRUNED_CLASSES:
        raise ValueError(
            f"No pruned class for {stock_name}; pruned models exist for {sorted(PRUNED_CLASSES)}."
        )
    model_type = model.config.model_type
    config = PRUNED_CONFIGS[model_type].from_dict(model.config.to_dict())
    setattr(config, MANIFEST_KEY, manifest)
    setattr(config, RECORD_KEY, record)
    pruned = PRUNED_CLASSES[stock_name](config).to(model.dtype)
    pruned.load_state_dict(model.state_dict(), strict=True)
    return pruned.eval()
