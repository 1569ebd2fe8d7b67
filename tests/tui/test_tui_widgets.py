"""The TUI's widgets and helpers, each in a tiny host app or on its own.

The streaming-cost test counts how many characters the markdown parser is
given per streamed token: only the last block is parsed and drawn again, so
that number stays flat however long the answer is.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from tui_support import Host, run_async, screen_text, wait_for

import themes
from dsvl_tui.commands.completion import complete, dropped_paths, path_matches
from dsvl_tui.commands.registry import CommandRegistry, registry
from dsvl_tui.core.conversation import Attachment, ChatMessage
from dsvl_tui.storage import config
from dsvl_tui.tui.palette import needs_argument
from dsvl_tui.tui.widgets import AssistantMessage, ImagePreview, PromptInput, StatusBar
from dsvl_tui.tui.widgets._image_preview import half_block_rows
from engine.types import GenerationStats

# --- streaming cost ------------------------------------------------------------


def _answer_tokens(count: int) -> list[str]:
    """A long markdown answer (paragraphs, lists, code blocks) cut into word-sized tokens."""
    words = "the picture shows a small red boat on a calm lake with hills behind it and".split()
    pieces: list[str] = []
    block = 0
    while len(pieces) < count:
        block += 1
        if block % 3 == 0:
            body = "\n".join(f"    total += step({block}, {line})" for line in range(5))
            text = f"```python\ndef part_{block}(step):\n    total = 0\n{body}\n    return total\n```\n\n"
        elif block % 3 == 1:
            text = f"Paragraph {block}: " + " ".join(words[i % len(words)] for i in range(40)) + ".\n\n"
        else:
            text = "".join(f"- point {block}.{i}: " + " ".join(words[:8]) + "\n" for i in range(4)) + "\n"
        pieces.extend(part for part in text.replace(" ", " \0").split("\0") if part)
    return pieces[:count]


def _view_lines(view) -> list[str]:
    return [view.render_line(y).text.rstrip() for y in range(view.virtual_size.height)]


@pytest.mark.slow
@run_async
async def test_streamed_answer_is_drawn_as_the_whole_text_and_cheaply(monkeypatch):
    from markdown_it import MarkdownIt

    parsed: list[tuple[int, int]] = []  # (tokens written so far, characters parsed)
    written = 0
    real_parse = MarkdownIt.parse

    def counting_parse(self, src, env=None):
        parsed.append((written, len(src)))
        return real_parse(self, src, env)

    monkeypatch.setattr(MarkdownIt, "parse", counting_parse)
    tokens = _answer_tokens(3000)
    widget, whole = AssistantMessage(), AssistantMessage(ChatMessage("assistant", "".join(tokens)))
    async with Host(widget).run_test(size=(100, 40)) as pilot:
        await pilot.pause()
        parsed.clear()
        for token in tokens:
            await widget.write(token)
            written += 1
            if written % 40 == 0:
                await pilot.pause()  # a frame: the view draws what came since the last one
        streaming = list(parsed)
        await widget.finish(GenerationStats(new_tokens=len(tokens)))
        await pilot.pause()
        assert widget.text == "".join(tokens) == widget.markdown.source
        assert widget.markdown.drawn_length == len(widget.text)
        streamed_lines = _view_lines(widget.markdown)
        assert "return total" in screen_text(pilot.app)  # the end of the answer is on screen
        await widget.remove()
        await pilot.app.mount(whole)
        await pilot.pause()
        assert _view_lines(whole.markdown) == streamed_lines

    early = sum(chars for at, chars in streaming if at <= 500)
    late = sum(chars for at, chars in streaming if at > len(tokens) - 500)
    total = sum(chars for _, chars in streaming)
    answer = len("".join(tokens))
    # Drawing the whole answer per frame would make late tokens ~6x dearer than early ones
    # and the total quadratic; only the last block is parsed and drawn, so both stay flat.
    assert late < 2.5 * early, (early, late)
    assert total < 30 * answer, (total, answer)


@run_async
async def test_finished_answer_is_one_widget_with_highlighted_code():
    message = ChatMessage("assistant", "Look:\n\n```python\nprint('hi')\n```\n", stats=GenerationStats(new_tokens=5))
    widget = AssistantMessage(message)
    async with Host(widget).run_test() as pilot:
        await pilot.pause()
        view = widget.markdown
        assert len(view.children) == 0 and _view_lines(view)[0] == "Look:"
        code = next(y for y, line in enumerate(_view_lines(view)) if "print('hi')" in line)
        colours = {segment.style.color for segment in view.render_line(code) if segment.text.strip()}
        assert len(colours) > 1  # highlighted
        assert widget.has_class("-done") and "5 tokens" in str(widget.query_one(".marker").render())


@run_async
async def test_answer_follows_the_theme_and_the_width():
    message = ChatMessage("assistant", "## Heading\n\n" + "word " * 60)
    widget = AssistantMessage(message)
    async with Host(widget).run_test(size=(60, 30)) as pilot:
        pilot.app.theme = "textual-dark"
        await pilot.pause()
        view = widget.markdown

        def heading_colour():
            return next(s.style.color for s in view.render_line(0) if s.text.strip()).triplet.hex

        dark, height = heading_colour(), view.virtual_size.height
        pilot.app.theme = "textual-light"
        await pilot.pause()
        assert heading_colour() != dark
        await pilot.resize_terminal(120, 30)
        await pilot.pause()
        assert view.virtual_size.height < height


@run_async
async def test_stopped_and_error_markers():
    widget = AssistantMessage()
    async with Host(widget).run_test() as pilot:
        await widget.write("partial")
        await widget.finish(GenerationStats(new_tokens=1), stopped=True)
        await pilot.pause()
        assert widget.state == "stopped" and widget.has_class("-stopped")
        assert str(widget.query_one(".marker").render()).startswith("stopped")
        assert widget.text == "partial"
    widget = AssistantMessage()
    async with Host(widget).run_test() as pilot:
        await widget.finish(None, error="out of GPU memory")
        await pilot.pause()
        assert widget.has_class("-error") and "out of GPU memory" in str(widget.query_one(".marker").render())


@run_async
async def test_control_sequences_are_removed_before_rendering():
    widget = AssistantMessage()
    async with Host(widget).run_test() as pilot:
        await widget.write("red \x1b[31mtext\x1b[0m and \x1b]52;c;SGVsbG8=\x07 bell\x07 \x9b2J")
        await widget.finish(None)
        await pilot.pause()
        assert "\x1b" not in widget.text and "\x07" not in widget.text and "\x9b" not in widget.text
        assert "\x1b" not in widget.markdown.source
        shown = screen_text(pilot.app)
        assert "red text" in shown and "\x1b" not in shown


# --- images --------------------------------------------------------------------


def _picture(path: Path, size=(40, 20)) -> Path:
    image = Image.new("RGB", size, (255, 0, 0))
    for x in range(size[0]):
        for y in range(size[1] // 2, size[1]):
            image.putpixel((x, y), (0, 0, 255))
    image.save(path)
    return path


def test_half_blocks_keep_colours_and_aspect(tmp_path):
    with Image.open(_picture(tmp_path / "p.png")) as image:
        rows = half_block_rows(image, 20, 8)
    assert len(rows[0]) == 20 and len(rows) == 5  # 40x20 px -> 20x10 px -> 20 cells x 5 rows
    assert rows[0][0] == ((255, 0, 0), (255, 0, 0))
    assert rows[-1][-1] == ((0, 0, 255), (0, 0, 255))


@run_async
async def test_image_preview_draws_cells_and_caption(tmp_path):
    preview = ImagePreview(Attachment.from_path(_picture(tmp_path / "my photo.png")), max_width=12, max_height=4)
    async with Host(preview).run_test() as pilot:
        await wait_for(pilot, lambda: preview.has_cells)
        assert preview.size.height == 3 + 1  # 40x20 px -> 12x6 px: 3 rows of cells and the caption
        first = preview.render_line(0)
        assert first.text == "\u2580" * 12
        segment = list(first)[0]
        assert segment.style.color.triplet == (255, 0, 0)
        assert "my photo.png" in preview.render_line(3).text


@run_async
async def test_unreadable_image_shows_its_name(tmp_path):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"not an image")
    preview = ImagePreview(Attachment(path=str(bad), name="broken.png"))
    async with Host(preview).run_test() as pilot:
        await wait_for(pilot, lambda: preview.has_class("-failed"))  # the thumbnail worker's time, not a fixed 2 s
        assert "broken.png" in preview.render_line(0).text


# --- input -------------------------------------------------------------------------


@run_async
async def test_prompt_keys_submit_newline_history():
    prompt = PromptInput()
    submitted: list[str] = []

    class PromptHost(Host):
        def on_prompt_input_submitted(self, event):
            submitted.append(event.text)

    async with PromptHost(prompt).run_test() as pilot:
        prompt.focus()
        await pilot.press("a", "ctrl+j", "b", "enter")
        await pilot.press("c", "enter")
        await pilot.pause()
        assert submitted == ["a\nb", "c"] and prompt.text == ""
        await pilot.press("x")
        await pilot.press("up")
        assert prompt.text == "c"
        await pilot.press("up")
        assert prompt.text == "a\nb"
        await pilot.press("up")  # the cursor was on the last line: it moves up first
        assert prompt.text == "a\nb" and prompt.cursor_location[0] == 0
        await pilot.press("down", "down")  # to the last line, then on to the next prompt
        assert prompt.text == "c"
        await pilot.press("down")
        assert prompt.text == "x"  # the draft comes back


@run_async
async def test_prompt_history_from_earlier_runs_goes_before_this_runs():
    prompt = PromptInput()
    kept: list[str] = []
    prompt.remember = kept.append
    async with Host(prompt).run_test() as pilot:
        prompt.focus()
        await pilot.press("c", "enter", "c", "enter", "d", "enter")
        assert kept == ["c", "d"]  # a repeat of the last prompt is not kept twice
        await pilot.press("up")
        assert prompt.text == "d"
        prompt.add_earlier(["a", "b", "c"])  # arrives while the user is already going back
        assert prompt.prompts == ["a", "b", "c", "d"]
        await pilot.press("up")
        assert prompt.text == "c"
        await pilot.press("up", "up")
        assert prompt.text == "a"
        assert kept == ["c", "d"]  # what was read back is not written again


@run_async
async def test_prompt_completes_commands_with_tab():
    reg = CommandRegistry()
    reg.command("regenerate", "again")(lambda s, a: None)
    reg.command("reset", "clear")(lambda s, a: None)
    prompt = PromptInput(registry=reg)
    async with Host(prompt).run_test() as pilot:
        prompt.focus()
        await pilot.press("/", "r", "e")
        assert prompt.completion.candidates == ["/regenerate", "/reset"]
        await pilot.press("g")
        assert prompt.suggestion == "enerate"
        await pilot.press("tab")
        assert prompt.text == "/regenerate "


@run_async
async def test_tab_where_several_commands_fit_goes_through_them_and_keeps_the_focus():
    """'/s' Tab moved the focus out of the input: what was typed next and Enter were lost (issue 26)."""
    reg = CommandRegistry()
    for name in ("save", "set", "stop"):
        reg.command(name, name)(lambda s, a: None)
    prompt = PromptInput(registry=reg)
    async with Host(prompt).run_test() as pilot:
        prompt.focus()
        await pilot.press("/", "s", "tab")
        assert pilot.app.focused is prompt and prompt.text == "/save "
        assert str(prompt.border_subtitle).startswith("1/3")
        await pilot.press("tab", "tab")
        assert prompt.text == "/stop "
        await pilot.press("tab")  # round again
        assert prompt.text == "/save "
        await pilot.press("shift+tab")
        assert prompt.text == "/stop " and pilot.app.focused is prompt
        await pilot.press("x", "enter")
        assert prompt.prompts == ["/stop x"] and prompt.text == ""  # sent


def test_path_completion_offers_each_match_as_a_whole_line(tmp_path):
    _picture(tmp_path / "my photo.png")
    _picture(tmp_path / "my other.png")
    (tmp_path / "my dir").mkdir()
    reg = CommandRegistry()
    reg.command("image", "attach", "/image PATH...", completes_paths=True)(lambda s, a: None)
    done = complete(f"/image {tmp_path}/my", reg)
    assert done.choices == [f"/image '{tmp_path}/my dir/", f"/image '{tmp_path}/my other.png' ",
                            f"/image '{tmp_path}/my photo.png' "]


def test_path_completion_quotes_spaces(tmp_path):
    _picture(tmp_path / "my photo.png")
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "sub").mkdir()
    reg = CommandRegistry()
    reg.command("image", "attach", "/image PATH...", completes_paths=True)(lambda s, a: None)
    done = complete(f"/image {tmp_path}/my", reg)
    assert done.suggestion == " photo.png"
    assert done.line == f"/image '{tmp_path}/my photo.png' "
    quoted = complete(f"/image '{tmp_path}/my", reg)
    assert quoted.line == f"/image '{tmp_path}/my photo.png' "
    names = path_matches(f"{tmp_path}/")
    assert names == [f"{tmp_path}/my photo.png", f"{tmp_path}/sub/"]  # not notes.txt


@run_async
async def test_after_tab_completes_a_quoted_path_the_hint_is_the_usage_not_the_folder(tmp_path, monkeypatch):
    """Tab on 'my p' gave "/image 'my photo.png' " and the hint went back to listing the folder; a
    common prefix with a space was quoted shut ("'my '"), so the next letters fell outside (issue 16)."""
    _picture(tmp_path / "my photo.png")
    _picture(tmp_path / "my other.png")
    _picture(tmp_path / "zebra.png")
    monkeypatch.chdir(tmp_path)
    reg = CommandRegistry()
    reg.command("image", "attach", "/image PATH...", completes_paths=True)(lambda s, a: None)
    prompt = PromptInput(registry=reg)
    async with Host(prompt).run_test() as pilot:
        prompt.focus()
        await pilot.press(*"/image my")
        await pilot.press("tab")
        assert prompt.text == "/image 'my "  # the quote stays open for the rest of the name
        await pilot.press("p", "tab")
        assert prompt.text == "/image 'my photo.png' "
        hint = str(prompt.border_subtitle)
        assert hint.startswith("/image PATH...") and "zebra" not in hint


def test_dropped_paths(tmp_path):
    picture = _picture(tmp_path / "dropped file.png")
    assert dropped_paths(f"'{picture}'") == [picture]
    assert dropped_paths(str(picture).replace(" ", "\\ ")) == [picture]
    assert dropped_paths(str(picture)) == [picture]  # unquoted, with a space
    assert dropped_paths(f"file://{str(picture).replace(' ', '%20')}") == [picture]
    assert dropped_paths("just some text") == []
    assert dropped_paths(f"'{tmp_path}/missing.png'") == []


# --- status bar ------------------------------------------------------------------


@run_async
async def test_status_bar_drops_detail_before_state_when_narrow():
    bar = StatusBar()
    async with Host(bar).run_test(size=(60, 3)) as pilot:
        bar.model, bar.device, bar.state = "deepseek-ai/deepseek-vl-7b-chat", "cuda:0 bfloat16", "ready"
        bar.tokens_per_second, bar.time_to_first_token = 31.5, 0.2
        bar.context_used, bar.context_window, bar.pending_images = 1200, 4096, 2
        await pilot.pause()
        text = str(bar.render())
        assert text.startswith("ready") and "+2 images" in text and "ctx" in text
        assert "cuda:0" not in text  # dropped first at 60 columns
        assert len(text) <= 58
    bar = StatusBar()
    async with Host(bar).run_test(size=(160, 3)) as pilot:
        bar.model, bar.device, bar.state = "deepseek-ai/deepseek-vl-7b-chat", "cuda:0 bfloat16", "generating"
        bar.tokens_per_second, bar.time_to_first_token = 31.5, 0.2
        bar.context_used, bar.context_window = 1200, 4096
        await pilot.pause()
        text = str(bar.render())
        for part in ("generating", "deepseek-vl-7b-chat", "cuda:0 bfloat16", "31.5 tok/s", "ttft 0.20s", "1200/4096"):
            assert part in text


# --- themes, config, palette -----------------------------------------------------------


def test_app_themes_are_data_and_valid():
    loaded = {theme.name: theme for theme in themes.load_themes()}
    assert {"dsvl-night", "dsvl-paper"} <= set(loaded)
    assert loaded["dsvl-night"].dark and not loaded["dsvl-paper"].dark
    assert themes.DEFAULT_THEME in loaded and "nord" in themes.theme_names()
    assert not list(themes.THEMES_DIR.glob("*.tcss"))  # themes are data; the stylesheet is beside the app


def test_bad_theme_file_is_named(tmp_path):
    (tmp_path / "bad.json").write_text(json.dumps({"name": "x", "primary": "not-a-colour"}))
    with pytest.raises(themes.ThemeFileError, match="bad.json.*primary"):
        themes.load_themes(tmp_path)
    (tmp_path / "bad.json").write_text(json.dumps({"name": "x", "primary": "#fff", "sparkle": 1}))
    with pytest.raises(themes.ThemeFileError, match="unknown theme field"):
        themes.load_themes(tmp_path)


def test_stylesheets_use_theme_variables_only():
    import re

    from dsvl_tui.tui import screens, widgets
    from dsvl_tui.tui.app import STYLESHEET

    sources = [STYLESHEET.read_text()] + [getattr(widgets, name).DEFAULT_CSS for name in widgets.__all__]
    sources += [screen.DEFAULT_CSS for screen in (screens.Dialog, screens.HelpScreen, screens.ResumeScreen)]
    for css in sources:
        assert not re.search(r"#[0-9a-fA-F]{3,8}\b|rgb\(|\b(red|blue|green|white|black)\b", css), css


def test_config_merges_and_replaces_atomically(tmp_path):
    assert config.load_config() == {}
    config.save_config(theme="dsvl-paper")
    config.save_config(other=1)
    assert config.load_config() == {"theme": "dsvl-paper", "other": 1}
    folder = config.config_path().parent
    assert [p.name for p in folder.iterdir()] == ["config.json"]  # no temporary file left
    config.config_path().write_text("{broken")
    assert config.load_config() == {}


def test_palette_runs_or_prefills():
    import dsvl_tui.commands.builtin  # noqa: F401 - fills the registry

    by_name = {c.name: c for c in registry.commands("tui")}
    assert needs_argument(by_name["image"]) and needs_argument(by_name["load"])
    assert not needs_argument(by_name["reset"]) and not needs_argument(by_name["save"])
