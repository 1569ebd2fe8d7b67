"""The ``dsvl-chat`` command.

INTERIM: until the TUI and REPL issues land, the command runs a plain
line-by-line chat loop on stdin/stdout (``_chat_loop`` below); they replace it.

Only light modules are imported at module level so that ``--help`` and
``--version`` answer at once: torch, transformers, textual and ``engine`` are
imported inside the command body.
"""

from __future__ import annotations

import sys
from typing import Annotated, Any, Optional

import typer

from dsvl_tui import __version__
from dsvl_tui.text import printable

DEFAULT_MODEL = "deepseek-ai/deepseek-vl-1.3b-chat"

app = typer.Typer(add_completion=False, pretty_exceptions_enable=False)


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dsvl-chat {__version__}")
        raise typer.Exit()


def _error(message: object) -> None:
    print(f"error: {printable(str(message))}", file=sys.stderr, flush=True)


def _progress(event: Any, *rest: Any) -> None:
    """Show the engine's load progress (``engine.LoadProgress``) on one stderr line, rewritten in place."""
    message = getattr(event, "message", None) or " ".join(str(a) for a in (event, *rest))
    sys.stderr.write("\r" + printable(message)[:79].ljust(79))
    if getattr(event, "stage", None) == "ready":
        sys.stderr.write("\n")
    sys.stderr.flush()


@app.command()
def chat(
    model: Annotated[str, typer.Option("--model", "-m", envvar="DSVL_MODEL", help="Hub id or local folder of a DeepSeek-VL checkpoint.")] = DEFAULT_MODEL,
    device: Annotated[str, typer.Option(envvar="DSVL_DEVICE", help="auto, cuda, cuda:N, mps or cpu.")] = "auto",
    dtype: Annotated[str, typer.Option(envvar="DSVL_DTYPE", help="auto, bfloat16, float16 or float32.")] = "auto",
    system: Annotated[Optional[str], typer.Option(envvar="DSVL_SYSTEM", help="System prompt (default: the model's own).")] = None,
    temperature: Annotated[float, typer.Option(help="Sampling temperature; 0 is greedy.")] = 0.2,
    top_p: Annotated[float, typer.Option(help="Nucleus sampling threshold, in (0, 1].")] = 0.95,
    max_new_tokens: Annotated[int, typer.Option(help="Most tokens generated per reply.")] = 512,
    theme: Annotated[Optional[str], typer.Option(help="TUI theme (planned; unused by the plain loop).")] = None,
    version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")] = False,
) -> None:
    """Chat with a DeepSeek-VL model in the terminal."""
    import engine  # heavy: pulls in torch and transformers

    try:
        settings = engine.GenerationSettings(temperature=temperature, top_p=top_p, max_new_tokens=max_new_tokens)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    print(f"loading {model} ...", file=sys.stderr, flush=True)
    try:
        eng = engine.load(model, device=device, dtype=dtype, progress=_progress)
    except engine.EngineError as exc:
        _error(exc)
        raise typer.Exit(2) from None
    print("ready: type a message; /quit or Ctrl-D to leave", file=sys.stderr, flush=True)
    try:
        _chat_loop(engine, eng, settings, system)
    except KeyboardInterrupt:
        print(file=sys.stderr)
        raise typer.Exit(130) from None


def _chat_loop(engine: Any, eng: Any, settings: Any, system: Optional[str]) -> None:
    """Interim plain loop: one line in, one streamed reply out, until EOF or /quit."""
    history: list = []
    while True:
        try:
            text = input("You: ").strip()
        except EOFError:
            print()
            return
        if not text:
            continue
        if text == "/quit":
            return
        turn = [*history, engine.Message("user", text)]
        parts: list[str] = []
        print("DeepSeek-VL: ", end="", flush=True)
        try:
            stream = eng.stream(turn, settings, system=system)
            for chunk in stream:
                parts.append(chunk)
                sys.stdout.write(printable(chunk))
                sys.stdout.flush()
        except engine.EngineError as exc:
            print()
            _error(exc)  # the turn is dropped; the conversation goes on
            continue
        print()
        stats = getattr(stream, "stats", None)
        if getattr(stats, "error", None):
            _error(stats.error)
            continue
        history = [*turn, engine.Message("assistant", "".join(parts))]


def main(argv: Optional[list[str]] = None) -> None:
    """Console-script entry point."""
    app(args=argv, prog_name="dsvl-chat")


if __name__ == "__main__":
    main()
