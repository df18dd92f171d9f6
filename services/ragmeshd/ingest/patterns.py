"""Glob patterns for --glob and --exclude, matched against paths relative to a root.

`*` matches within one path segment, `**` any number of segments (`docs/**/*.md` matches
`docs/a.md` and `docs/x/y/a.md`), `?` one character, `[abc]` a class. A pattern without a
slash matches a name at any depth, as in .gitignore: `*.md` matches `a/b/c.md`, `drafts`
matches every file or folder named drafts.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property


def _translate(pattern: str) -> str:
    out: list[str] = []
    index = 0
    while index < len(pattern):
        char = pattern[index]
        if pattern.startswith("**/", index):
            out.append("(?:.*/)?")
            index += 3
        elif pattern.startswith("**", index):
            out.append(".*")
            index += 2
        elif char == "*":
            out.append("[^/]*")
            index += 1
        elif char == "?":
            out.append("[^/]")
            index += 1
        elif char == "[":
            close = pattern.find("]", index + 2)
            if close == -1:
                out.append(re.escape(char))
                index += 1
            else:
                body = pattern[index + 1 : close]
                if body.startswith("!"):
                    body = "^" + body[1:]
                out.append(f"[{body.replace(chr(92), chr(92) * 2)}]")
                index = close + 1
        else:
            out.append(re.escape(char))
            index += 1
    return "".join(out)


@dataclass(frozen=True)
class Pattern:
    text: str

    @cached_property
    def _regex(self) -> re.Pattern[str]:
        body = self.text.strip().removeprefix("./").rstrip("/")
        if "/" not in body:
            body = "**/" + body
        body = body.lstrip("/")
        return re.compile(_translate(body) + r"\Z", re.DOTALL)

    def matches(self, relative: str) -> bool:
        """Whether `relative` (a POSIX path relative to a root) matches."""
        return self._regex.match(relative) is not None


def any_match(patterns: tuple[Pattern, ...], relative: str) -> bool:
    return any(pattern.matches(relative) for pattern in patterns)
