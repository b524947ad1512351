"""Safe artifact files: all-or-nothing folder writes, and checked safetensors reads."""

from __future__ import annotations

import contextlib
import ctypes
import fnmatch
import json
import os
import shutil
import tempfile
from collections.abc import Iterator

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file

INCOMPLETE_MARKER = ".keepwhat_incomplete"


@contextlib.contextmanager
def atomic_directory(
    directory: str | os.PathLike, owned_files: tuple[str, ...] = ()
) -> Iterator[str]:
    """Yields an empty staging folder; on success `directory` becomes, all at once, the staged
    files plus the files of the old folder that this artifact does not own (`owned_files`,
    glob patterns: a stale shard or feature extractor of an earlier save goes, a file of the
    user's stays).

    The staging folder sits beside `directory` on the same filesystem and is exchanged with it
    in one `renameat2(RENAME_EXCHANGE)` where Linux has it (two renames elsewhere), so a crash
    leaves the old folder or the new one, never a mix. A destination that is a mount point
    cannot be renamed: the files are then moved one by one under a `.keepwhat_incomplete` marker
    that loaders refuse (`require_complete`) until the last one is in place.

    Args:
        directory: The destination folder; created if missing.
        owned_files: Glob patterns of the names this kind of artifact writes.
    """
    directory = os.path.abspath(os.fspath(directory))
    mount = os.path.ismount(directory)
    parent = directory if mount else os.path.dirname(directory)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(directory)}.tmp-", dir=parent)
    try:
        yield staging
        _keep_foreign_files(directory, staging, owned_files)
        if mount:
            _move_files_in(staging, directory, owned_files)
        elif not os.path.exists(directory):
            os.rename(staging, directory)
        else:
            _exchange(staging, directory)  # the old folder is now at `staging`
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _owned(name: str, owned_files) -> bool:
    return any(fnmatch.fnmatch(name, pattern) for pattern in owned_files)


def _keep_foreign_files(directory: str, staging: str, owned_files) -> None:
    """Copies what the old folder holds besides this artifact's own files into the staging one."""
    if not os.path.isdir(directory):
        return
    for name in os.listdir(directory):
        source, target = os.path.join(directory, name), os.path.join(staging, name)
        if _owned(name, owned_files) or name == INCOMPLETE_MARKER or os.path.exists(target):
            continue
        if os.path.samefile(source, staging):  # a mount point holds its own staging folder
            continue
        if os.path.isdir(source):
            shutil.copytree(source, target, symlinks=True)
        else:
            shutil.copy2(source, target)


def _exchange(new: str, old: str) -> None:
    """Swaps two folders atomically where the kernel can, else with two renames."""
    try:
        renameat2 = getattr(ctypes.CDLL(None, use_errno=True), "renameat2", None)
    except OSError:  # no C library to ask (Windows)
        renameat2 = None
    if renameat2 is not None:
        at_fdcwd, rename_exchange = -100, 2
        if renameat2(at_fdcwd, new.encode(), at_fdcwd, old.encode(), rename_exchange) == 0:
            return
    backup = new + ".old"
    os.rename(old, backup)
    os.rename(new, old)
    os.rename(backup, new)


def _move_files_in(staging: str, directory: str, owned_files) -> None:
    marker = os.path.join(directory, INCOMPLETE_MARKER)
    with open(marker, "w", encoding="utf-8") as f:
        f.write("an hf_keepwhat save into this folder did not finish\n")
    for name in os.listdir(directory):
        if _owned(name, owned_files) and not os.path.exists(os.path.join(staging, name)):
            os.remove(os.path.join(directory, name))
    for name in os.listdir(staging):
        os.replace(os.path.join(staging, name), os.path.join(directory, name))
    os.remove(marker)


def require_complete(directory: str | os.PathLike, what: str) -> None:
    """Refuses a folder whose save was interrupted (see `atomic_directory`).

    Args:
        directory: The artifact folder.
        what: What the folder should be, for the message.
    """
    if os.path.exists(os.path.join(directory, INCOMPLETE_MARKER)):
        raise ValueError(
            f"{directory} holds a {what} whose save was interrupted: its files may be a mix of "
            "two saves. Save it again."
        )


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
    require_complete(directory, what)
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


def weights_shapes(directory: str, weights_name: str, what: str) -> tuple[str, dict]:
    """Tensor shapes of a saved model's weights, one file or shards with their index
    (`save_pretrained(max_shard_size=...)`); returns the file named in messages, and the shapes.

    Args:
        directory: The model folder.
        weights_name: The single-file name, e.g. `model.safetensors`.
        what: What the folder should be, for the message.
    """
    single = os.path.join(directory, weights_name)
    index = single + ".index.json"
    if os.path.isfile(single) or not os.path.isfile(index):
        return require_file(directory, weights_name, what), safetensors_shapes(single)
    shards = sorted(set(read_json(index).get("weight_map", {}).values()))
    shapes = {}
    for shard in shards:
        shapes.update(safetensors_shapes(require_file(directory, shard, what)))
    return index, shapes
