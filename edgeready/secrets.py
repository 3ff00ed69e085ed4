"""Keeping API keys out of everything a run writes.

An endpoint candidate names the environment variable that holds its key (`api_key_env`), never the key. The
adapter redacts the key from its error messages, but a server can also echo it inside an answer, and answers
reach items/*.jsonl, verdict.json, summary.md and the Allure attachments. So every gate result is scrubbed of
the values of all key variables in use before it is recorded, whatever field the key hides in.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable
from typing import Any, TypeVar

T = TypeVar("T")

# Shorter values are not redacted: a one-letter "key" would blank every word that contains the letter.
MIN_SECRET_LENGTH = 4


class Redactor:
    """Replaces each secret value by `[redacted $NAME]` in strings, however deeply they are nested."""

    def __init__(self, secrets: dict[str, str]):
        # Longest first: a key that contains another key is replaced whole.
        self._secrets = sorted(((v, n) for n, v in secrets.items() if len(v) >= MIN_SECRET_LENGTH),
                               key=lambda vn: -len(vn[0]))

    @classmethod
    def from_env(cls, names: Iterable[str]) -> Redactor:
        return cls({n: os.environ[n] for n in set(names) if os.environ.get(n)})

    def __bool__(self) -> bool:
        return bool(self._secrets)

    def text(self, text: str) -> str:
        for value, name in self._secrets:
            if value in text:
                text = text.replace(value, f"[redacted ${name}]")
        return text

    def scrub(self, obj: T) -> T:
        """A copy of `obj` (strings, dicts, lists, tuples, dataclasses) with every secret redacted."""
        if not self._secrets:
            return obj
        return self._scrub(obj)  # type: ignore[no-any-return]

    def _scrub(self, obj: Any) -> Any:
        if isinstance(obj, str):
            return self.text(obj)
        if isinstance(obj, dict):
            return {self._scrub(k): self._scrub(v) for k, v in obj.items()}
        if isinstance(obj, list | tuple) and not hasattr(obj, "_fields"):
            return type(obj)(self._scrub(v) for v in obj)
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            return dataclasses.replace(obj, **{f.name: self._scrub(getattr(obj, f.name))
                                               for f in dataclasses.fields(obj) if f.init})
        return obj
