"""Exceptions raised for invalid override definitions and override files."""

from __future__ import annotations

__all__ = ["OverridesError", "OverridesFileError"]


class OverridesError(ValueError):
    """An override definition is invalid.

    Raised by :meth:`OverridesProvider.set` and by the constructor's ``flags``
    argument. The message names the flag key and the offending field, e.g.
    ``flag 'recommender': field 'rules[0].when.country': must be ...``.

    Attributes:
        reason: What is wrong, without the location prefix.
        flag_key: The flag whose override is invalid, if the problem is tied to one flag.
        field: Where inside that flag's override the problem is (``value``,
            ``value.weights[2]``, ``rules[1].when.country``, ...), if known.
        path: The override file, for problems found while reading a file.
    """

    def __init__(
        self,
        reason: str,
        *,
        flag_key: str | None = None,
        field: str | None = None,
        path: str | None = None,
    ) -> None:
        self.reason = reason
        self.flag_key = flag_key
        self.field = field
        self.path = path
        super().__init__(self._compose())

    def _compose(self) -> str:
        parts: list[str] = []
        if self.path is not None:
            parts.append(f"overrides file '{self.path}'")
        if self.flag_key is not None:
            parts.append(f"flag '{self.flag_key}'")
        if self.field is not None:
            parts.append(f"field '{self.field}'")
        parts.append(self.reason)
        return ": ".join(parts)


class OverridesFileError(OverridesError):
    """An override file is missing, unreadable, unparsable or holds an invalid override.

    The message always starts with ``overrides file '<path>'``; when the problem
    is inside one flag's definition it also names the flag key and the field.
    """

    def __init__(
        self,
        reason: str,
        *,
        path: str,
        flag_key: str | None = None,
        field: str | None = None,
    ) -> None:
        super().__init__(reason, flag_key=flag_key, field=field, path=path)
