"""The errors of target lists: one line each, "FILE:LINE: message"."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path


class TargetFileError(ValueError):
    """A target file that cannot be used; str(err) is "FILE:LINE: message"."""

    def __init__(self, path: Path | str, line: int, message: str) -> None:
        super().__init__(f"{path}:{line}: {message}")
        self.path, self.line, self.message = str(path), line, message


class RowError(TargetFileError):
    """One CSV row that cannot be measured: skipped with a warning, unless loading is strict."""


OnSkip = Callable[[RowError], None]
