"""Keywords in photo metadata: the fields each tool reads, merging, and reading a hierarchy back.

A keyword is text with an optional ``|`` hierarchy (``Places|Japan|Tokyo``).  Written as:

* XMP ``lr:hierarchicalSubject`` (Lightroom, bag): every keyword whole, ``|``-separated;
* XMP ``digiKam:TagsList`` (digiKam, seq): every keyword whole, ``/``-separated;
* XMP ``dc:subject`` (bag) and IPTC ``Keywords`` (64 bytes each): the leaf of each keyword,
  as digiKam writes them — what every other tool searches.

Read back, the hierarchical field gives the keywords whole (Lightroom's, else digiKam's)
and flat words that are not a leaf or a parent of one of them are added after them, so a
photo another tool tagged loses nothing.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

XMP_SUBJECT = "Xmp.dc.subject"
XMP_LR_HIERARCHICAL = "Xmp.lr.hierarchicalSubject"
XMP_DIGIKAM_TAGS = "Xmp.digiKam.TagsList"
IPTC_KEYWORDS = "Iptc.Application2.Keywords"
KEYWORD_XMP_KEYS = (XMP_SUBJECT, XMP_LR_HIERARCHICAL, XMP_DIGIKAM_TAGS)
#: IPTC IIM's limit for one keyword, in bytes.
IPTC_KEYWORD_MAX_BYTES = 64
HIERARCHY = "|"
DIGIKAM_HIERARCHY = "/"
# pyexiv2 writes every list as an rdf:Seq; these two are bags in their schemas (exiftool
# warns "incorrect list type" and strict XMP parsers may skip them).
_SEQ_WRITTEN_AS_BAG = re.compile(
    r"(<(dc:subject|lr:hierarchicalSubject)>\s*<rdf:)Seq(>.*?</rdf:)Seq(>\s*</\2>)", re.DOTALL
)


def as_words(value: Any) -> list[str]:
    """An XMP array or IPTC repeated dataset as a list of stripped, non-empty strings."""
    values = [value] if isinstance(value, str) else list(value or []) if isinstance(value, list | tuple) else []
    return [v.strip() for v in values if isinstance(v, str) and v.strip()]


def keyword_parts(keyword: str) -> list[str]:
    return [part.strip() for part in keyword.split(HIERARCHY) if part.strip()]


def keyword_key(keyword: str) -> tuple[str, ...]:
    return tuple(part.casefold() for part in keyword_parts(keyword))


def normalized_keywords(keywords: Iterable[str]) -> list[str]:
    """Keywords with clean ``|`` parts, the first of each (compared ignoring case) kept, in order."""
    seen: set[tuple[str, ...]] = set()
    result = []
    for keyword in keywords:
        key = keyword_key(keyword)
        if key and key not in seen:
            seen.add(key)
            result.append(HIERARCHY.join(keyword_parts(keyword)))
    return result


def _implied_words(keywords: Iterable[str]) -> set[str]:
    """Every part of every keyword (casefolded): a flat word among them says nothing more."""
    return {part for keyword in keywords for part in keyword_key(keyword)}


def keywords_from_fields(xmp: dict[str, Any], iptc: dict[str, Any]) -> list[str]:
    """The photo's keywords, whole, from whichever fields hold them (see the module doc)."""
    hierarchical = as_words(xmp.get(XMP_LR_HIERARCHICAL)) or [
        word.replace(DIGIKAM_HIERARCHY, HIERARCHY) for word in as_words(xmp.get(XMP_DIGIKAM_TAGS))
    ]
    return merge_keywords(hierarchical, as_words(xmp.get(XMP_SUBJECT)) + as_words(iptc.get(IPTC_KEYWORDS)))


def merge_keywords(first: Iterable[str], then: Iterable[str]) -> list[str]:
    """*first*, then those of *then* it does not already hold; a flat word of *then* that is a
    part of one of *first*'s keywords (``Tokyo`` beside ``Places|Japan|Tokyo``) is held already."""
    first = normalized_keywords(first)
    implied = _implied_words(first)
    extra = [k for k in then if not (len(keyword_key(k)) == 1 and keyword_key(k)[0] in implied)]
    return normalized_keywords([*first, *extra])


def leaf_words(keywords: Iterable[str]) -> list[str]:
    """The leaf of each keyword, each once (dc:subject and IPTC Keywords hold these)."""
    seen: set[str] = set()
    result = []
    for keyword in keywords:
        parts = keyword_parts(keyword)
        if parts and parts[-1].casefold() not in seen:
            seen.add(parts[-1].casefold())
            result.append(parts[-1])
    return result


def iptc_keyword(word: str) -> str:
    data = word.encode("utf-8")
    return word if len(data) <= IPTC_KEYWORD_MAX_BYTES else data[:IPTC_KEYWORD_MAX_BYTES].decode("utf-8", "ignore")


def keyword_xmp_values(keywords: list[str]) -> dict[str, list[str]]:
    """What each XMP keyword property holds for *keywords* (normalized)."""
    return {
        XMP_SUBJECT: leaf_words(keywords),
        XMP_LR_HIERARCHICAL: list(keywords),
        XMP_DIGIKAM_TAGS: [DIGIKAM_HIERARCHY.join(keyword_parts(k)) for k in keywords],
    }


def keyword_iptc_values(keywords: list[str]) -> list[str]:
    return [iptc_keyword(word) for word in leaf_words(keywords)]


def bag_typed(packet: str) -> str:
    """*packet* with dc:subject and lr:hierarchicalSubject as the bags their schemas say."""
    return _SEQ_WRITTEN_AS_BAG.sub(r"\1Bag\3Bag\4", packet)
