"""Compare (issue 25, part 3): the compared answer's record, the second backend's loading with its memory
check, and the compared side's answers, on two tiny real checkpoints."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest

from dsvl_tui.backends.choose import load_backend
from dsvl_tui.backends.compare import (
    CompareError,
    CompareRequest,
    checkpoint_parameters,
    load_side,
    memory_need,
    parse_request,
)
from dsvl_tui.backends.compared_turn import ComparedTurn
from dsvl_tui.core.conversation import ComparedAnswer, Conversation
from dsvl_tui.core.options import Options
from dsvl_tui.core.turn import stream_answer
from dsvl_tui.storage.transcript import TranscriptError, load_transcript, save_transcript
from engine.testing.random_checkpoints import write_checkpoint
from engine.types import GenerationSettings, GenerationStats

SHORT = GenerationSettings(max_new_tokens=6, temperature=0.0)


@pytest.fixture(scope="module")
def two(tmp_path_factory) -> SimpleNamespace:
    folder = tmp_path_factory.mktemp("compare")
    first = write_checkpoint(folder / "tiny-a", seed=1)
    second = write_checkpoint(folder / "tiny-b", seed=2)
    options = Options(model=str(first), device="cpu")
    return SimpleNamespace(first=first, second=second, options=options, main=load_backend(options))


def _compared_conversation() -> Conversation:
    conversation = Conversation(model="tiny-a", settings=SHORT)
    conversation.add_user("What is red?")
    answer = conversation.add_answer("Red is a colour.", GenerationStats(new_tokens=4, stop_reason="eos"))
    answer.compared = ComparedAnswer("tiny-b", "A colour, red.", quantize="int8",
                                     settings=GenerationSettings(temperature=1.0, max_new_tokens=6),
                                     stats=GenerationStats(new_tokens=3, time_to_first_token=0.2, stop_reason="eos"))
    conversation.add_user("And blue?")
    conversation.add_answer("Blue is too.", None, error=None)
    return conversation


# -- the record ----------------------------------------------------------------------


def test_a_transcript_keeps_both_answers(tmp_path: Path) -> None:
    path = save_transcript(_compared_conversation(), tmp_path / "both.json")
    loaded = load_transcript(path)
    compared = loaded.messages[1].compared
    assert compared is not None
    assert (compared.model, compared.text, compared.quantize) == ("tiny-b", "A colour, red.", "int8")
    assert compared.settings is not None and compared.settings.temperature == 1.0
    assert compared.stats is not None and compared.stats.time_to_first_token == 0.2
    assert loaded.messages[1].text == "Red is a colour."
    assert loaded.messages[3].compared is None  # an answer with nothing compared has no field
    assert "compared" not in json.loads(path.read_text())["messages"][3]


def test_each_side_continues_its_own_answers() -> None:
    conversation = _compared_conversation()
    main = [m.text for m in conversation.engine_messages()]
    other = [m.text for m in conversation.engine_messages(compared=True)]
    assert main == ["What is red?", "Red is a colour.", "And blue?", "Blue is too."]
    assert other == ["What is red?", "A colour, red.", "And blue?", "Blue is too."]


@pytest.mark.parametrize(("change", "field"), [
    ({"text": 5}, "messages[1].compared.text"),
    ({"quantize": "int3"}, "messages[1].compared.quantize"),
    ({"settings": {"temperature": -1}}, "messages[1].compared.settings"),
    ({"settings": {"colour": 1}}, "messages[1].compared.settings.colour"),
    ({"stats": {"new_tokens": -3}}, "messages[1].compared.stats.new_tokens"),
    ({"stopped": "yes"}, "messages[1].compared.stopped"),
])
def test_a_bad_compared_answer_is_named(tmp_path: Path, change: dict, field: str) -> None:
    path = save_transcript(_compared_conversation(), tmp_path / "both.json")
    document = json.loads(path.read_text())
    document["messages"][1]["compared"].update(change)
    path.write_text(json.dumps(document))
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    assert caught.value.field == field


def test_a_compared_text_past_the_limit_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from dsvl_tui.storage.transcript import format as transcript_format

    conversation = _compared_conversation()
    compared = conversation.messages[1].compared
    assert compared is not None
    compared.text = "x" * 40
    path = save_transcript(conversation, tmp_path / "both.json")
    monkeypatch.setattr(transcript_format, "MAX_TEXT_CHARS", 30)  # every other text is shorter
    with pytest.raises(TranscriptError) as caught:
        load_transcript(path)
    assert caught.value.field == "messages[1].compared.text"


# -- what to compare with ---------------------------------------------------------------


def test_the_request_reads_model_server_quantization_and_settings() -> None:
    request = parse_request(["tiny-b", "--quantize", "int4", "--top-p=0.5", "--seed", "random",
                             "--max-new-tokens", "9"])
    assert request == CompareRequest("tiny-b", None, "int4", {"top_p": 0.5, "seed": None, "max_new_tokens": 9})
    assert parse_request(["--endpoint", "http://h:1"]).endpoint == "http://h:1"
    for words, problem in ((["a", "b"], "one model"), (["--colour", "red"], "unknown option --colour"),
                           (["--quantize", "int3"], "int3"), (["--top-k", "x"], "whole number"),
                           (["--temperature", "nan"], "finite"), (["--endpoint"], "needs a value")):
        with pytest.raises(CompareError, match=problem):
            parse_request(words)


# -- loading the second backend -------------------------------------------------------------


def test_a_second_model_says_what_it_needs_before_it_loads(two) -> None:
    said: list[str] = []
    loads: list[str] = []

    def loader(model: str, **kwargs):
        loads.append(said[-1] if said else "nothing said")
        return load_backend(Options(model=model, device="cpu"))

    side = load_side(two.options, parse_request([str(two.second)]), two.main, say=said.append, loader=loader)
    assert loads == [said[0]]  # said before the load started
    assert said[0].startswith("tiny-b needs about ") and "of memory is free; loading it to compare" in said[0]
    assert side.backend is not two.main and not side.shared and side.model == str(two.second)


def test_a_model_that_does_not_fit_is_refused_without_loading(two) -> None:
    loads: list[str] = []
    need = memory_need(two.options, str(two.second), "none")
    assert need.need is not None and need.need >= checkpoint_parameters(two.second) * 4  # float32 weights
    with pytest.raises(CompareError) as caught:
        load_side(two.options, parse_request([str(two.second)]), two.main, loader=lambda *a, **k: loads.append("x"),
                  free=lambda device: need.need - 1)
    assert not loads
    assert str(caught.value).startswith("not loading tiny-b to compare: needs about ")
    assert "does not fit" in str(caught.value) and "\n" not in str(caught.value)


def test_a_model_whose_size_cannot_be_told_is_refused(two) -> None:
    with pytest.raises(CompareError, match="cannot be told before it is downloaded"):
        load_side(two.options, parse_request(["someone/unknown-model"]), two.main, loader=lambda *a, **k: None)


def test_the_same_model_with_other_settings_shares_the_one_engine(two) -> None:
    said: list[str] = []
    side = load_side(two.options, parse_request(["--temperature", "1.5"]), two.main, say=said.append,
                     loader=lambda *a, **k: pytest.fail("nothing loads"))
    assert side.shared and side.backend is two.main
    assert said == ["comparing on the one engine already loaded (tiny-a): the answers take turns (--max-batch 1)"]
    with pytest.raises(CompareError, match="nothing to compare"):
        load_side(two.options, CompareRequest(str(two.first)), two.main)


def test_a_server_address_is_refused_in_web_mode(two, web_mode) -> None:
    with pytest.raises(CompareError, match="--endpoint is not available here"):
        load_side(two.options, parse_request(["--endpoint", "http://169.254.169.254/"]), two.main)


# -- answering on both sides ---------------------------------------------------------------


def test_both_sides_answer_and_the_answer_records_both(two) -> None:
    side = load_side(two.options, parse_request([str(two.second)]), two.main)
    conversation = Conversation(model=str(two.first), settings=SHORT)
    conversation.add_user("Describe the sky.")
    turn = ComparedTurn.of(side, conversation)
    chunks: list[str] = []
    worker = threading.Thread(target=lambda: chunks.append(turn.run(chunks.append)))  # both at once
    worker.start()
    answer = stream_answer(two.main, conversation, cancel=threading.Event(), on_chunk=lambda chunk: None)
    worker.join()
    compared = chunks.pop()
    assert isinstance(compared, ComparedAnswer) and compared.text == "".join(chunks) and compared.text
    assert compared.stats is not None and compared.stats.new_tokens == 6
    assert compared.stats.time_to_first_token is not None and compared.stats.tokens_per_second is not None
    assert compared.text != answer.text  # another model's weights: another answer
    answer.compared = compared
    # The next turn: the compared side sees its own answer, the main side its own.
    conversation.add_user("And at night?")
    assert ComparedTurn.of(side, conversation).messages[1].text == compared.text
    assert conversation.engine_messages()[1].text == answer.text


def test_a_compared_side_that_fails_keeps_the_main_answer(two) -> None:
    class Refusing:
        info = two.main.info

        def stream(self, *args, **kwargs):
            raise RuntimeError("out of\nmemory")

    side = load_side(two.options, parse_request(["--temperature", "1"]), two.main)
    side.backend = Refusing()
    conversation = Conversation(settings=SHORT)
    conversation.add_user("hi")
    compared = ComparedTurn.of(side, conversation).run()
    assert compared.error is not None and "\n" not in compared.error and compared.text == ""
    assert compared.settings is not None and compared.settings.temperature == 1.0


# -- servers ----------------------------------------------------------------------------------


def test_a_server_gets_no_key_of_the_main_one_and_serves_the_compared_answers(monkeypatch) -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent / "backends"))
    from fake_openai import FakeOpenAI, Script

    with FakeOpenAI(Script(model="main-model", api_key="main-key")) as main_server, \
            FakeOpenAI(Script(model="other-model", others=["third"])) as other_server:
        options = Options(endpoint=main_server.url, api_key="main-key")
        main = load_backend(options)
        side = load_side(options, parse_request(["--endpoint", other_server.url]), main)
        assert (side.model, side.endpoint, side.shared) == ("other-model", other_server.url, False)
        conversation = Conversation(settings=SHORT)
        conversation.add_user("hi")
        compared = ComparedTurn.of(side, conversation).run()
        assert compared.text == "Hello there" and compared.endpoint == other_server.url
        assert all("main-key" not in str(headers) for headers in other_server.headers)  # never sent elsewhere
        monkeypatch.setenv("DSVL_COMPARE_API_KEY", "its-own-key")
        keyed = load_side(options, parse_request(["--endpoint", other_server.url]), main)
        ComparedTurn.of(keyed, conversation).run()
        assert "Bearer its-own-key" in str(other_server.headers[-1])
        # The same server: another model it serves; one it does not serve is refused (not its first instead).
        with pytest.raises(CompareError, match="the model server does not serve nothing-like-it; it serves main-model"):
            load_side(options, parse_request(["nothing-like-it"]), main)
        with pytest.raises(CompareError, match="--quantize is for a model loaded here"):
            load_side(options, parse_request(["--quantize", "int4"]), main)
        same = load_side(options, parse_request(["--top-k", "3"]), main)
        assert same.shared and same.backend is main


@pytest.mark.slow  # two 300-token answers: seconds
def test_with_batching_both_answers_decode_together_on_the_one_engine(two) -> None:
    from dsvl_tui.backends.compared_turn import ComparedThread

    options = Options(model=str(two.first), device="cpu", max_batch=2)
    main = load_backend(options)
    said: list[str] = []
    side = load_side(options, parse_request(["--temperature", "0.9"]), main, say=said.append)
    assert said == ["comparing on the one engine already loaded (tiny-a): both answers decode together"]
    conversation = Conversation(settings=GenerationSettings(max_new_tokens=300, temperature=0.0, ignore_eos=True))
    conversation.add_user("Tell a long story.")
    compared = ComparedThread(side, conversation)
    answering = threading.Thread(target=lambda: stream_answer(main, conversation, cancel=threading.Event(),
                                                              on_chunk=lambda chunk: None))
    answering.start()
    most = 0
    while answering.is_alive() or compared.thread.is_alive():
        most = max(most, main.batch_counts()[0])
    answering.join()
    answer = conversation.messages[-1]
    answer.compared = compared.finish(False)
    assert most == 2  # one forward for both
    assert answer.stats.new_tokens == answer.compared.stats.new_tokens == 300


def test_the_markdown_export_shows_the_compared_answer(tmp_path: Path) -> None:
    from dsvl_tui.storage.transcript import export_markdown

    text = export_markdown(_compared_conversation(), tmp_path / "both.md").read_text()
    assert text.index("Red is a colour.") < text.index("### Compared: `tiny-b` (int8)") < text.index("A colour, red.") \
        < text.index("And blue?")
