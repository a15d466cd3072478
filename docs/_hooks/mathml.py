"""MkDocs (ProperDocs) hook: every formula rendered to MathML when the site is built, and
the Pygments stylesheet of the code blocks written beside the pages.

pymdownx.arithmatex (generic mode) leaves each formula as ``\\(...\\)`` in a
``<span class="arithmatex">`` or ``\\[...\\]`` in a ``<div class="arithmatex">``; this hook
replaces it with the MathML that latex2mathml makes of it. Browsers render MathML natively
(Chromium since 109, Firefox, Safari), so the pages need no JavaScript, no font and no
network to show their math, from a server or opened from disk. A formula latex2mathml cannot
convert stops the build (strict), naming the page and the formula.
"""

from __future__ import annotations

import html
import re

from latex2mathml.converter import convert

_MATH = re.compile(
    r'<(?P<tag>span|div) class="arithmatex">\s*(?:\\\((?P<inline>.*?)\\\)|\\\[(?P<block>.*?)\\\])'
    r'\s*</(?P=tag)>', re.S)


_MTEXT = re.compile(r"<mtext>[^<]*</mtext>")
# latex2mathml writes c' as a superscript prime: raised twice and shrunk, c' reads as c
_PRIME = re.compile(r"<msup>(<mi>[^<]*</mi>)<mi>&#x02032;</mi></msup>")
# a Sphinx role left in a docstring (:func:`eca` arrives as :func:<code>eca</code>)
_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|exc|obj|const):(?=<code>)")


class MathError(Exception):
    pass


def _mathml(match: re.Match, page: str) -> str:
    block = match.group("block") is not None
    tex = html.unescape(match.group("block") if block else match.group("inline")).strip()
    try:
        out = convert(tex, display="block" if block else "inline")
    except Exception as exc:  # noqa: BLE001 - any converter failure names the formula
        raise MathError(f"{page}: cannot render the formula {tex!r}: {exc}") from None
    # latex2mathml keeps TeX's escapes inside \text{...}: min\_size would show its backslash
    out = _MTEXT.sub(lambda t: t.group(0).replace("\\_", "_").replace("\\%", "%")
                     .replace("\\#", "#").replace("\\{", "{").replace("\\}", "}"), out)
    out = _PRIME.sub(r"\1<mo>&#x02032;</mo>", out)
    if "<merror" in out or "<mi>&</mi>" in out or "<mi>&amp;</mi>" in out:
        # (an environment latex2mathml does not know, such as aligned, leaves its & as text)
        raise MathError(f"{page}: latex2mathml could not render {tex!r}")
    return f'<div class="math">{out}</div>' if block else out


def on_page_content(html_text: str, page, config, files) -> str:
    html_text = _ROLE.sub("", html_text)
    return _MATH.sub(lambda m: _mathml(m, page.file.src_path), html_text)


def on_post_build(config) -> None:
    """The colours of the code blocks, which pymdownx.highlight marks up with Pygments'
    classes: Pygments' default style, written beside the pages."""
    from pathlib import Path

    from pygments.formatters import HtmlFormatter

    css = Path(config["site_dir"]) / "css" / "pygments.css"
    css.parent.mkdir(parents=True, exist_ok=True)
    css.write_text(HtmlFormatter(style="default").get_style_defs(".highlight") + "\n")
