"""Reading prompts from the command line or a file, with the checks a user needs."""

from __future__ import annotations

from pathlib import Path

from bltbench.errors import BltbenchError


def read_prompt(text: str | None, file: Path | None) -> bytes:
    """The prompt's bytes; exactly one source, non-empty, valid UTF-8."""
    if (text is None) == (file is None):
        raise BltbenchError("give exactly one of --prompt or --prompt-file")
    if file is not None:
        try:
            data = file.read_bytes()
        except OSError as exc:
            raise BltbenchError(f"cannot read prompt file {file}: {exc.strerror or exc}") from None
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise BltbenchError(f"prompt file {file} is not valid UTF-8 (byte {exc.start})") from None
        source = f"prompt file {file}"
    else:
        data = text.encode("utf-8", errors="surrogateescape")
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            raise BltbenchError("the prompt is not valid UTF-8") from None
        source = "the prompt"
    if not data:
        raise BltbenchError(f"{source} is empty")
    return data
