"""``dsvl-chat ask``: one question, one answer on stdout, then exit.

The answer streams to stdout as plain text (or, with ``--json``, one JSON
object once it is complete); load progress, the stats line and errors go to
stderr, so ``answer=$(dsvl-chat ask ...)`` holds only the answer. An error
is one line, ``error: ...``, and the exit code says what kind it was:

    0    the answer is complete
    2    usage error: an unknown option or a bad value (typer's own code), a device, dtype
         or local model folder checked before torch is imported (``cli.check_engine_values``)
    3    bad input: an image or transcript that cannot be used, an empty question,
         a question too long for the context window
    4    the model failed: it could not be loaded, or generation failed part way
    130  interrupted (Ctrl+C); what was generated so far is printed (and saved)

Inputs are checked before the model loads, so a wrong path fails at once.
"""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from dsvl_tui.core.options import Options
from dsvl_tui.core.text import printable, valid_text

if TYPE_CHECKING:
    from dsvl_tui.backends.compare import CompareSide
    from dsvl_tui.core.conversation import ChatMessage, ComparedAnswer, Conversation
    from engine.types import ChatBackend

_C1 = re.compile(r"[\x7f-\x9f]")  # DEL and the C1 controls

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_INPUT = 3
EXIT_ENGINE = 4
EXIT_INTERRUPTED = 130


class AskFailure(Exception):
    """Ends ``ask`` with ``code`` and a one-line message."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class AskRequest:
    options: Options
    question: str  # "-" reads it from stdin
    images: list[Path] = field(default_factory=list)
    json: bool = False
    transcript: Path | None = None  # continued (if it exists) and appended to
    quiet: bool = False  # no progress or stats on stderr
    # What the user set explicitly; a continued transcript keeps its own values for the rest.
    model_given: bool = True
    system_given: bool = True
    quantize_given: bool = True  # else a continued transcript's quantize (what answered it) is used
    settings_given: dict[str, Any] = field(default_factory=dict)
    compare: str | None = None  # "MODEL [--quantize MODE] [--temperature T]...": a second answer (/compare's words)


def run_ask(request: AskRequest, *, stdin: TextIO | None = None, stdout: TextIO | None = None,
            stderr: TextIO | None = None) -> int:
    """Answer ``request``; returns the exit code."""
    out, err = stdout or sys.stdout, stderr or sys.stderr
    try:
        return _Ask(request, stdin or sys.stdin, out, err).run()
    except AskFailure as failure:
        err.write(f"error: {printable(str(failure))}\n")
        err.flush()
        return failure.code
    except KeyboardInterrupt:
        err.write("interrupted\n")
        err.flush()
        return EXIT_INTERRUPTED


class _Ask:
    def __init__(self, request: AskRequest, stdin: TextIO, out: TextIO, err: TextIO) -> None:
        self.request = request
        self.stdin, self.out, self.err = stdin, out, err

    def note(self, text: str) -> None:
        if not self.request.quiet:
            self.err.write(printable(text) + "\n")
            self.err.flush()

    def run(self) -> int:
        from dsvl_tui.core.conversation import LimitError

        question = self._question()
        compare = self._compare_request()
        conversation = self._conversation()
        self._attach(conversation)
        try:
            conversation.add_user(question)  # before the model loads: a question too long fails at once
        except LimitError as exc:
            raise AskFailure(EXIT_INPUT, str(exc)) from None
        backend = self._load(conversation.model)
        conversation.model = backend.info.model_id
        side = self._load_compared(compare, backend) if compare is not None else None
        answer, interrupted = self._generate(backend, conversation, side)
        self._save(conversation)
        if self.request.json:
            self._print_json(conversation, answer)
        if interrupted:
            raise KeyboardInterrupt
        if answer.error:
            raise AskFailure(EXIT_ENGINE, answer.error)
        if answer.compared is not None and answer.compared.error:
            raise AskFailure(EXIT_ENGINE, f"the compared model failed: {answer.compared.error}")
        return EXIT_OK

    # -- inputs, all checked before the model loads ----------------------------------

    def _question(self) -> str:
        text = self.request.question
        if text == "-":
            text = self._read_stdin()
        text = valid_text(text)  # bytes that were not UTF-8 (argv, stdin) became U+FFFD
        if not text.strip():
            raise AskFailure(EXIT_INPUT, "the question is empty")
        return text.strip()

    def _read_stdin(self) -> str:
        """All of stdin, bytes that are not text in its encoding replaced (never a UnicodeDecodeError)."""
        binary = getattr(self.stdin, "buffer", None)
        if binary is None:  # a text stream only (tests)
            return self.stdin.read()
        return binary.read().decode(getattr(self.stdin, "encoding", None) or "utf-8", errors="replace")

    def _conversation(self):
        from dsvl_tui.core.conversation import Conversation, text_problem

        request, options = self.request, self.request.options
        path = request.transcript
        if path is not None and path.exists():
            conversation = self._load_transcript(path)
            if request.system_given:
                conversation.system = options.system
            if request.settings_given:
                try:
                    conversation.settings = dataclasses.replace(conversation.settings, **request.settings_given)
                except ValueError as exc:
                    raise AskFailure(EXIT_USAGE, str(exc)) from None
            if request.model_given or not conversation.model:
                conversation.model = options.model
            if not request.quantize_given and not options.endpoint:
                options.quantize = conversation.quantize
        else:
            conversation = Conversation(system=options.system, settings=options.settings, model=options.model)
        problem = text_problem(conversation.system, "the system prompt")
        if problem:
            raise AskFailure(EXIT_INPUT, problem)
        return conversation

    def _load_transcript(self, path: Path):
        try:
            from dsvl_tui.storage.transcript import TranscriptError, load_transcript, missing_images
        except ImportError as exc:
            raise AskFailure(EXIT_INPUT, f"transcripts are not available in this build ({exc})") from None
        try:
            conversation = load_transcript(path)
        except TranscriptError as exc:
            raise AskFailure(EXIT_INPUT, str(exc)) from None
        except OSError as exc:
            raise AskFailure(EXIT_INPUT, f"cannot read {path}: {exc.strerror or exc}") from None
        missing = missing_images(conversation)
        if missing:
            self.note(f"{path}: {missing} image{'s' if missing > 1 else ''} missing; continuing without")
        return conversation

    def _attach(self, conversation) -> None:
        from dsvl_tui.core.conversation import Attachment
        from engine.errors import ImageError
        from engine.images import load_image

        for path in self.request.images:
            try:
                load_image(path)
                conversation.pending.append(Attachment.from_path(path))
            except ImageError as exc:
                raise AskFailure(EXIT_INPUT, str(exc)) from None
            except OSError as exc:
                raise AskFailure(EXIT_INPUT, f"cannot read image {path}: {exc.strerror or exc}") from None

    def _compare_request(self):
        """``--compare``'s words as ``/compare`` takes them, read before any model loads."""
        if self.request.compare is None:
            return None
        import shlex

        from dsvl_tui.backends.compare import CompareError, parse_request

        try:
            words = shlex.split(self.request.compare)
            if not words:
                raise CompareError("--compare needs a model (or --endpoint URL, or settings to change)")
            return parse_request(words)
        except (ValueError, CompareError) as exc:
            raise AskFailure(EXIT_USAGE, f"--compare: {exc}") from None

    # -- the model -------------------------------------------------------------------------

    def _load(self, model: str) -> ChatBackend:
        from dsvl_tui.backends.choose import load_backend, loading_line
        from dsvl_tui.repl.load_progress import ProgressLines, describe_failure

        self.note(loading_line(self.request.options, model))
        progress = None if self.request.quiet else ProgressLines(self.note)
        try:
            return load_backend(self.request.options, model, progress)
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - any load failure is exit code 4 with one line
            raise AskFailure(EXIT_ENGINE, describe_failure(exc)) from None

    def _load_compared(self, compare, backend: ChatBackend) -> CompareSide:
        """The compared side (``--compare``): what a second model needs is said before it loads."""
        from dsvl_tui.backends.compare import CompareError, load_side
        from dsvl_tui.repl.load_progress import ProgressLines, describe_failure

        progress = None if self.request.quiet else ProgressLines(self.note)
        try:
            return load_side(self.request.options, compare, backend, say=self.note, progress=progress)
        except CompareError as exc:
            raise AskFailure(EXIT_ENGINE, str(exc)) from None
        except KeyboardInterrupt:
            raise
        except Exception as exc:  # noqa: BLE001 - any load failure is exit code 4 with one line
            raise AskFailure(EXIT_ENGINE, f"the compared model: {describe_failure(exc)}") from None

    def _generate(self, backend: ChatBackend, conversation: Conversation,
                  side: CompareSide | None = None) -> tuple[ChatMessage, bool]:
        from dsvl_tui.backends.choose import stats_line
        from dsvl_tui.backends.compared_turn import ComparedThread
        from dsvl_tui.core.conversation import side_label
        from dsvl_tui.core.turn import stream_answer
        from dsvl_tui.repl.printers import PlainPrinter
        from engine.errors import ContextOverflowError, EngineError, ImageError

        printer = PlainPrinter(self.out)
        feed = (lambda chunk: None) if self.request.json else printer.feed
        interrupted = False
        notes: list[str] = []  # what the server sent that was dropped: said after the answer
        compared = ComparedThread(side, conversation) if side is not None else None  # both answers generate at once
        main_label = side_label(conversation.model)
        if compared is not None and not self.request.json:
            self._label(main_label)
        try:
            answer = stream_answer(backend, conversation, cancel=threading.Event(), on_chunk=feed, on_note=notes.append)
        except (ImageError, ContextOverflowError) as exc:
            if compared is not None:
                compared.stop()
            raise AskFailure(EXIT_INPUT, str(exc)) from None
        except EngineError as exc:
            if compared is not None:
                compared.stop()
            raise AskFailure(EXIT_ENGINE, str(exc)) from None
        except KeyboardInterrupt:  # stream_answer kept the partial answer, marked stopped
            interrupted = True
            answer = conversation.messages[-1]
        finally:
            printer.finish()
            for notice in conversation.image_notices():  # a picture changed since --transcript was read
                self.note(notice)
        for note in notes:
            self.note(note)
        line = stats_line(answer.stats)
        if line:
            self.note(f"{main_label}: {line}" if compared is not None else line)
        if compared is not None:
            answer.compared = compared.finish(interrupted)
            if not self.request.json:
                self._label(compared.turn.side.label)
                other = PlainPrinter(self.out)
                other.feed(answer.compared.text)
                other.finish()
            line = stats_line(answer.compared.stats)
            if line:
                self.note(f"{compared.turn.side.label}: {line}")
        return answer, interrupted

    def _label(self, label: str) -> None:
        """The line before each answer of a comparison, on stdout with them: ``== tiny-a ==``."""
        self.out.write(f"== {printable(label)} ==\n")
        self.out.flush()

    # -- results -----------------------------------------------------------------------------

    def _save(self, conversation: Conversation) -> None:
        path = self.request.transcript
        if path is None:
            return
        from dsvl_tui.storage.transcript import TranscriptError, save_transcript

        try:
            save_transcript(conversation, path)
        except TranscriptError as exc:
            raise AskFailure(EXIT_INPUT, str(exc)) from None
        except OSError as exc:
            raise AskFailure(EXIT_INPUT, f"cannot save {path}: {exc.strerror or exc}") from None

    def _print_json(self, conversation: Conversation, answer: ChatMessage) -> None:
        document = {
            "answer": answer.text,
            "stopped": answer.stopped,
            "error": answer.error,
            "stats": dataclasses.asdict(answer.stats) if answer.stats else None,
            "model": conversation.model,
            "quantize": conversation.quantize,
            "settings": dataclasses.asdict(conversation.settings),
            "system": conversation.system,
            "images": [a.path for m in conversation.messages[-2:-1] for a in m.images],
            "transcript": str(self.request.transcript) if self.request.transcript else None,
        }
        if answer.compared is not None:
            document["compared"] = _compared_json(answer.compared)
        # Paths may hold any bytes; json escapes C0 controls (ESC as \u001b) but not DEL or C1 ones, which
        # a terminal takes as controls too (U+009B is CSI): escaped the same way.
        text = _C1.sub(lambda m: f"\\u{ord(m.group()):04x}", valid_text(json.dumps(document, ensure_ascii=False)))
        self.out.write(text + "\n")
        self.out.flush()


def _compared_json(compared: ComparedAnswer) -> dict[str, Any]:
    return {
        "model": compared.model, "endpoint": compared.endpoint or None, "quantize": compared.quantize,
        "answer": compared.text, "stopped": compared.stopped, "error": compared.error,
        "stats": dataclasses.asdict(compared.stats) if compared.stats else None,
        "settings": dataclasses.asdict(compared.settings) if compared.settings else None,
    }

