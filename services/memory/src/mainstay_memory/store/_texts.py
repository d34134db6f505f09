"""Input checks shared by the embedding adapters (small on purpose: both import it).

Every backend must refuse the same inputs the same way. An empty or
whitespace-only text has nothing to embed: the local model would quietly return
the vector of ``[CLS] [SEP]`` (close to many unrelated texts) and a provider
would answer 400. The memory service rejects empty content before it gets here;
this guards every other caller and names the offending position.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mainstay_common.errors import InvalidArgument

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = ["check_texts"]


def check_texts(texts: Sequence[str]) -> None:
    """Raise ``InvalidArgument`` for an empty text, ``TypeError`` for a bare ``str``."""
    if isinstance(texts, str):
        # A str is a Sequence[str] too: embedding it would embed each character.
        raise TypeError("embed() takes a sequence of texts, not a single str")
    for position, text in enumerate(texts):
        if not text.strip():
            raise InvalidArgument(
                f"cannot embed an empty text: texts[{position}] is empty or only whitespace"
            )
