"""Where an exported file goes and how it is written: in one piece (atomically), so a failed export leaves no
partial file behind."""

from __future__ import annotations

import os
from pathlib import Path

from smose.errors import SmoseError
from smose.serialization import atomic_write_bytes


def resolve_out(out: Path | str, default_file_name: str) -> Path:
    """An existing directory, or a path ending in a separator, gets the format's default file name."""
    text = str(out)
    path = Path(out)
    is_dir = path.is_dir() or text.endswith(("/", os.sep))
    return path / default_file_name if is_dir else path


def write_output_file(target: Path, data: bytes) -> None:
    """Create ``target``'s directory if needed and replace ``target`` with ``data`` atomically."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    except OSError as exc:
        raise SmoseError(f"{target}: cannot write the exported policy ({exc.strerror or exc})") from None
