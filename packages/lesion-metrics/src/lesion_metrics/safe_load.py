"""Describing why ``torch.load(..., weights_only=True)`` refused a weight file.

PyTorch's message for a file that holds arbitrary Python objects advises retrying with
``weights_only=False``, which would run whatever code the file carries; the description never
passes that advice on."""

from __future__ import annotations

import pickle
import re


def load_problem(error: BaseException) -> str:
    """One line: a refused pickle names the object it holds; anything else its first line."""
    text = str(error)
    if isinstance(error, pickle.UnpicklingError) or "weights_only" in text:
        found = re.search(r"GLOBAL (\S+)", text)
        return ("holds Python objects other than tensors" + (f" ({found.group(1)})" if found else "")
                + "; refused, nothing in it was run")
    return f"{type(error).__name__}: {text.splitlines()[0] if text else ''}"


__all__ = ["load_problem"]
