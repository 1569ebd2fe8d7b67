"""How answers look: rich's Markdown with the app's headings and code blocks, styled from a
Textual theme (``look_for``). ``dsvl_tui.markdown.render`` draws with it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache

from rich.markdown import CodeBlock, Heading, Markdown
from rich.theme import Theme

from dsvl_tui.core.text import printable


class _LeftHeading(Heading):
    """Headings flush left, as in the rest of the app (rich centres ``#``)."""

    LEVEL_ALIGN = {tag: "left" for tag in ("h1", "h2", "h3", "h4", "h5", "h6")}


@lru_cache(maxsize=1)
def _builtin_lexer_names() -> frozenset[str]:
    from pygments.lexers import get_all_lexers

    return frozenset(alias for _, aliases, _, _ in get_all_lexers(plugins=False) for alias in aliases)


class _CodeBlock(CodeBlock):
    """Code highlighted by pygments' own lexers; other names are shown as plain text.

    A fence streams in one letter at a time (```` ```t ````, ```` ```ty ````, ...):
    pygments looks a name it does not know up among installed plugins, which
    loads every package's entry points (and, here, IPython's) for each one:
    hundreds of milliseconds in the middle of an answer.
    """

    @classmethod
    def create(cls, markdown: Markdown, token) -> CodeBlock:
        block = super().create(markdown, token)
        if block.lexer_name.lower() not in _builtin_lexer_names():
            block.lexer_name = "text"
        return block


class AnswerMarkdown(Markdown):
    """rich's Markdown with the app's headings; model text is shown, never obeyed
    (links are shown with their address: a terminal hyperlink could hide where it goes)."""

    elements = {**Markdown.elements, "heading_open": _LeftHeading, "fence": _CodeBlock, "code_block": _CodeBlock}

    def __init__(self, text: str, *, code_theme: str) -> None:
        super().__init__(printable(text), code_theme=code_theme, hyperlinks=False)


@dataclass(frozen=True)
class MarkdownLook:
    """The styles blocks are drawn with: a rich theme and a code highlighting theme."""

    theme: Theme
    code_theme: str
    key: tuple


def _colour(variables: Mapping[str, str], name: str, fallback: str) -> str:
    from textual.color import Color, ColorParseError

    value = variables.get(name, fallback)
    try:
        colour = Color.parse(value)
    except ColorParseError:  # "auto 60%" and the like: not a colour on its own
        return fallback
    if colour.a < 1:  # rich has no alpha: blend over the background, as the screen would
        colour = Color.parse(variables.get("background", "#000000")).blend(colour.with_alpha(1), colour.a)
    return colour.hex6


def look_for(variables: Mapping[str, str], *, dark: bool) -> MarkdownLook:
    """A ``MarkdownLook`` from a Textual theme's CSS variables (``App.get_css_variables()``)."""
    return _look(tuple(sorted(variables.items())), dark)


@lru_cache(maxsize=8)
def _look(items: tuple, dark: bool) -> MarkdownLook:
    variables = dict(items)
    foreground = _colour(variables, "foreground", "#e0e0e0" if dark else "#202020")
    background = _colour(variables, "background", "#121212" if dark else "#ffffff")
    from textual.color import Color

    muted = Color.parse(background).blend(Color.parse(foreground), 0.6).hex6
    accent = _colour(variables, "accent", "#fea62b")
    primary = _colour(variables, "primary", "#0178d4")
    surface = _colour(variables, "surface", "#1e1e1e" if dark else "#f0f0f0")
    styles = {
        "markdown.code": f"bold {_colour(variables, 'text-accent', accent)} on {surface}",
        "markdown.block_quote": muted,
        "markdown.hr": muted,
        "markdown.item.bullet": f"bold {accent}",
        "markdown.item.number": f"bold {accent}",
        "markdown.link": f"underline {_colour(variables, 'text-primary', primary)}",
        "markdown.link_url": muted,
        "markdown.table.border": muted,
        "markdown.table.header": f"bold {foreground}",
        "markdown.h1.border": primary,
    }
    for level in range(1, 7):
        colour = _colour(variables, f"markdown-h{level}-color", primary if level < 4 else foreground)
        text_style = variables.get(f"markdown-h{level}-text-style", "bold")
        styles[f"markdown.h{level}"] = f"{text_style} {colour}".strip()
    return MarkdownLook(Theme(styles), "monokai" if dark else "friendly", (items, dark))
