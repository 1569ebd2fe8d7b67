"""``/compare`` in ``dsvl-chat web``, in a real browser (issue 25): the compared side is the web server's own model
server with other settings; both answers stream side by side in the page and the journal keeps both. A server
address typed in the browser is refused (it would be fetched from the server's network).

The server, the browser and the page reading are ``test_browser``'s (one ``dsvl-chat web`` for this module).
"""

from __future__ import annotations

import pytest
from test_browser import ANSI, Web, open_tab, wait_for, web, words

__all__ = ["web"]  # the module's server: test_browser's fixture
pytestmark = pytest.mark.slow  # pyproject.toml: a server and a browser; not in the inner loop


def test_compare_streams_both_answers_side_by_side_in_the_browser(web: Web) -> None:
    tab = open_tab(web)
    before = len(tab.frames)
    tab.type_line("/compare --endpoint http://169.254.169.254/")
    wait_for(lambda: "not available here" in tab.text(before), page=tab.page,  # a notice wraps: its last words
             what="the refusal of a server address typed in the browser")
    tab.type_line("/compare --temperature 0.7 --seed 1")
    wait_for(lambda: "comparing with tiny-siglip (temperature=0.7, seed=1)" in tab.text(before), page=tab.page,
             what="the comparison starting")
    start = len(tab.frames)
    tab.type_line("Compare the weather.")

    def both() -> list[dict]:
        return [message for conversation in web.journal() if conversation["title"] == "Compare the weather."
                for message in conversation["messages"] if message["role"] == "assistant" and message["stats"]
                and (message.get("compared") or {}).get("stats")]

    answer = wait_for(both, page=tab.page, timeout=120, what="both answers in the autosaved conversation")[0]
    compared = answer["compared"]
    assert compared["settings"]["temperature"] == 0.7 and compared["settings"]["seed"] == 1
    assert compared["text"].strip() and answer["text"].strip()
    assert compared["stats"]["new_tokens"] and compared["stats"]["time_to_first_token"] is not None
    assert "endpoint" not in compared  # dsvl-chat web's own model server: its address is of one run only
    for text in (answer["text"], compared["text"]):
        wait_for(lambda text=text: [w for w in words(text) if w in tab.text(start)], page=tab.page,
                 what="each answer's words on the page")
    # Side by side: one screen line holds the two sides' headings, and two stats lines are drawn.
    wait_for(lambda: any("(temperature=0.7, seed=1)" in line and line.count("tiny-siglip") == 2
                         for line in tab.text(start).split("\n")), page=tab.page,
             what="the two answers' headings on one line")
    wait_for(lambda: tab.text(start).count("tok/s") >= 2, page=tab.page, what="each answer's stats line")
    streamed = [frame for frame in tab.frames[start:] if any(w in ANSI.sub("", frame) for w in words(compared["text"]))]
    assert len(streamed) >= 2, "the compared answer came in one piece, not streamed"
    assert tab.outside == []
    tab.page.close()
