"""Safe artifact files: all-or-nothing folder writes, and checked safetensors reads."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file


@contextlib.contextmanager
def atomic_directory(
    directory: str | os.PathLike, owned_files: tuple[str, ...] = ()
) -> Iterator[str]:
    """Yields a temporary folder; on success its files replace those in `directory`.

    Files are written in full under a temporary name next to `directory` and only then renamed
    into place, so an interrupted save never leaves a half-written file where a good one was.
    `owned_files` that the new save did not write are removed (e.g. a remote-code file that a
    stock-config save no longer needs).

    Args:
        directory: The destination folder; created if missing.
        owned_files: Names this kind of artifact may write, and so may remove when stale.
    """
    directory = os.fspath(directory)
    parent = os.path.dirname(os.path.abspath(directory))
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        yield staging
        os.makedirs(directory, exist_ok=True)
        written = set()
        for root, _, files in os.walk(staging):
            for name in files:
                source = os.path.join(root, name)
                relative = os.path.relpath(source, staging)
                target = os.path.join(directory, relative)
                os.makedirs(os.path.dirname(target), exist_ok=True)
                os.replace(source, target)
                written.add(relative)
        for name in owned_files:
            if name not in written and os.path.isfile(os.path.join(directory, name)):
                os.remove(os.path.join(directory, name))
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def write_json(path: str | os.PathLike, data: dict) -> None:
    """Writes `data` as indented JSON, under a temporary name first, then renamed into place;
    creates the parent folder when missing.

    Args:
        path: The file to (re)write.
        data: A JSON-serialisable dict.
    """
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    temporary = f"{os.fspath(path)}.tmp"
    with open(temporary, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(temporary, path)


def require_file(directory: str | os.PathLike, name: str, what: str) -> str:
    """Returns `directory/name`, or raises FileNotFoundError saying which file is missing.

    Args:
        directory: The artifact folder.
        name: The file name.
        what: What the folder should be, for the message (e.g. "a pruned model").
    """
    path = os.path.join(directory, name)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"{path} is missing: {directory} is not a complete {what}. Save it again with "
            "save_pretrained, or point to the folder that holds it."
        )
    return path


def read_json(path: str | os.PathLike) -> dict:
    """Reads a JSON file, naming the file when it is not valid JSON.

    Args:
        path: The file.
    """
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(
            f"{path} is not valid JSON ({e}): the file is corrupt or truncated."
        ) from e


def safetensors_shapes(path: str | os.PathLike) -> dict[str, tuple[int, ...]]:
    """Tensor shapes recorded in a safetensors file, checking that the file is whole.

    Args:
        path: The safetensors file.
    """
    try:
        with safe_open(os.fspath(path), framework="pt") as f:
            return {key: tuple(f.get_slice(key).get_shape()) for key in f.keys()}
    except (SafetensorError, OSError) as e:
        raise ValueError(
            f"{path} is not a readable safetensors file ({e}): it is corrupt or truncated. "
            "Save the artifact again."
        ) from e


def load_safetensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Loads a safetensors file on CPU, naming the file when it is corrupt or truncated.

    Args:
        path: The safetensors file.
    """
    safetensors_shapes(path)
    return load_file(os.fspath(path), device="cpu")


def check_shapes(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], path: str, source: str
) -> None:
    """Raises a ValueError naming every tensor whose shape in `path` differs from `source`'s.

    Args:
        expected: Shapes the config or model describes.
        found: Shapes the weights file holds.
        path: The weights file, for the message.
        source: Where `expected` comes from, for the message (e.g. "config.json").
    """
    problems = []
    for key in sorted(set(expected) | set(found)):
        if key not in found:
            problems.append(f"{key}: missing from the weights")
        elif key not in expected:
            problems.append(f"{key}: not in the model {source} describes")
        elif tuple(expected[key]) != tuple(found[key]):
            problems.append(
                f"{key}: {source} says {tuple(expected[key])}, weights hold {found[key]}"
            )
    if problems:
        listed = "; ".join(problems[:6]) + (
            f"; and {len(problems) - 6} more" if len(problems) > 6 else ""
        )
        raise ValueError(f"{path} does not match {source}: {listed}.")


def check_shape_counts(
    expected: dict[str, tuple[int, ...]], found: dict[str, tuple[int, ...]], path: str, source: str
) -> None:
    """Like `check_shapes` for weights saved under other names: the multisets of shapes must
    agree; the message lists the shapes that differ.

    Args:
        expected: Shapes the config or model describes.
        found: Shapes the weights file holds.
        path: The weights file, for the message.
        source: Where `expected` comes from, for the message.
    """
    from collections import Counter

    wanted, held = Counter(map(tuple, expected.values())), Counter(map(tuple, found.values()))
    if wanted != held:
        missing = sorted((wanted - held).elements())[:6]
        extra = sorted((held - wanted).elements())[:6]
        raise ValueError(
            f"{path} does not match {source}: {source} describes tensors of shapes {missing} that "
            f"the weights lack, and the weights hold shapes {extra} it does not describe."
        )
