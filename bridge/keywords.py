"""Keyword search for the directory: accent- and case-insensitive word prefixes.

Pure, no I/O. ``normalise`` folds a text to plain lower-case words ("Facturación" →
"facturacion"), so that an advisor who types ``factura`` finds the billing group whatever
accents or capitals its name was written with.
"""

from __future__ import annotations

import unicodedata


def normalise(text: str) -> str:
    """``text`` without accents (NFKD, combining marks dropped), casefolded, with each run of
    whitespace one space."""
    decomposed = unicodedata.normalize("NFKD", text)
    plain = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(plain.casefold().split())


def words(text: str) -> list[str]:
    """The normalised words of ``text``; ``/``, ``-``, ``_``, ``.``, ``:`` and ``@`` split words
    too, so that paths (``support/billing``), slugs and Matrix ids are searched by their parts."""
    folded = normalise(text)
    for sep in "/-_.:@":
        folded = folded.replace(sep, " ")
    return folded.split()


def matches(query: str, *texts: str) -> bool:
    """Whether every word of ``query`` is the beginning of some word of ``texts`` (accents and
    case do not count); an empty query matches nothing, so that a listing is never everyone by
    accident."""
    wanted = words(query)
    if not wanted:
        return False
    have = [w for text in texts for w in words(text)]
    return all(any(h.startswith(w) for h in have) for w in wanted)
