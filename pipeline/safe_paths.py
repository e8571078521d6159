"""Where the project may write: separate from every input, inside its output root, never
in a system folder (the names a config puts into paths are checked by
``strict_config.check_safe_name``).

A user's data is sacred. The checks here run at config validation (before Ray starts)
and again where files are written or deleted, so a path built from a config value (a
phase name, an output folder equal to an input) can never reach outside the output
root or into an input.
"""

from __future__ import annotations

import os
import posixpath
from collections.abc import Callable, Iterable
from pathlib import PurePosixPath

import pyarrow.fs as pafs

SYSTEM_FOLDERS = (
    "/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc",
    "/run", "/sbin", "/snap", "/sys", "/usr", "/var/cache", "/var/lib", "/var/log",
    "/var/run", "/var/spool", "/System", "/Library", "/private/etc", "/private/var/db",
)  # fmt: skip
"""Folders of the operating system: an output_dir there (or equal to ``/``) is refused
unless the config says so explicitly (a job running as root could overwrite them)."""

GLOB_CHARACTERS = frozenset("*?[")


def is_uri(path: str) -> bool:
    return "://" in path


def glob_base(path: str) -> str:
    """The folder a glob lists: ``/data/crawl/*.warc.gz`` -> ``/data/crawl``."""
    parts = path.split("/")
    for index, part in enumerate(parts):
        if GLOB_CHARACTERS & set(part):
            return "/".join(parts[:index]) or "/"
    return path


def canonical(path: str) -> str:
    """A comparable form: local paths resolved through every symlink (so two spellings
    of one folder compare equal), URIs normalised (``s3://b/x/../y`` -> ``s3://b/y``)."""
    if is_uri(path):
        scheme, _, rest = path.partition("://")
        normalised = posixpath.normpath("/" + rest).lstrip("/")
        return f"{scheme.lower()}://{normalised}"
    return os.path.realpath(os.path.abspath(path))


def _contains(outer: str, inner: str) -> bool:
    """``inner`` equals ``outer`` or lies below it (both canonical)."""
    if is_uri(outer) != is_uri(inner):
        return False
    if outer == inner:
        return True
    return inner.startswith(outer.rstrip("/") + "/")


def overlap_problem(output_dir: str, inputs: Iterable[tuple[str, str]]) -> str | None:
    """Why ``output_dir`` may not be used with these ``(key, path)`` inputs, or None.

    Equal, output inside an input, or input inside the output are all refused: a rerun
    with ``--overwrite`` would delete the corpus, a new file written into an input
    would be read as input by the next run, and an input inside the output would be
    taken for the project's own files."""
    output = canonical(output_dir)
    for key, path in inputs:
        base = canonical(glob_base(path))
        if output == base:
            return f"{output_dir} is the same folder as {key} ({path})"
        if _contains(base, output):
            return f"{output_dir} lies inside {key} ({path})"
        if _contains(output, base):
            return f"{key} ({path}) lies inside output_dir {output_dir}"
    return None


def system_folder_problem(output_dir: str) -> str | None:
    """Why ``output_dir`` is a system folder (or the filesystem root), or None."""
    if is_uri(output_dir) and not output_dir.startswith("file://"):
        return None
    local = output_dir.removeprefix("file://")
    resolved = canonical(local)
    if resolved == "/":
        return f"{output_dir} is the filesystem root"
    for folder in SYSTEM_FOLDERS:
        if _contains(folder, resolved):
            return f"{output_dir} lies in the system folder {folder}"
    return None


def output_problem(output_dir: str, inputs: Iterable[tuple[str, str]]) -> str | None:
    """Both checks of an output folder: no overlap with an input, no system folder."""
    return overlap_problem(output_dir, inputs) or system_folder_problem(output_dir)


def inside(root: str, *parts: str, local: bool = True) -> str:
    """``root/parts...``, or ValueError when the result leaves ``root``.

    Every part is a name or a relative path built from config values; the joined path
    is normalised (and, for a ``local`` root, resolved through existing symlinks) before
    the check, so ``../x``, an absolute part and a symlink pointing out are all caught.
    ``local=False`` is for a path inside an object store (no symlinks there)."""
    for part in parts:
        if PurePosixPath(part).is_absolute() or "\x00" in part:
            raise ValueError(f"{part!r} is not a relative name: refusing to write outside {root}")
    joined = posixpath.join(root, *parts)
    if local and not is_uri(root):
        outer, inner = canonical(root), canonical(joined)
    else:
        outer, inner = posixpath.normpath(root), posixpath.normpath(joined)
    if not _contains(outer, inner):
        raise ValueError(f"{joined} lies outside the output root {root}")
    return joined


def delete_owned_files(
    filesystem: pafs.FileSystem, root: str, owns: Callable[[str], bool]
) -> tuple[int, list[str]]:
    """Delete the files under ``root`` whose root-relative path ``owns`` accepts (the
    names this project writes), then the folders left empty; returns (files deleted,
    files left because they are not ours). Symlinks are never followed nor deleted:
    a link in the output folder may point at anything."""
    deleted, foreign = 0, []
    if isinstance(filesystem, pafs.LocalFileSystem):
        folders = []
        for folder, subfolders, names in os.walk(root, followlinks=False):
            folders.append(folder)
            for name in names + [d for d in subfolders if os.path.islink(os.path.join(folder, d))]:
                full = os.path.join(folder, name)
                relative = os.path.relpath(full, root)
                if not os.path.islink(full) and owns(relative):
                    os.unlink(full)
                    deleted += 1
                else:
                    foreign.append(relative)
        for folder in sorted(folders, key=len, reverse=True):
            if folder != root and not os.listdir(folder):
                os.rmdir(folder)
        return deleted, sorted(foreign)
    selector = pafs.FileSelector(root, recursive=True, allow_not_found=True)
    entries = filesystem.get_file_info(selector)
    for entry in entries:
        if entry.type != pafs.FileType.File:
            continue
        relative = posixpath.relpath(entry.path, root)
        if owns(relative):
            filesystem.delete_file(entry.path)
            deleted += 1
        else:
            foreign.append(relative)
    return deleted, sorted(foreign)
