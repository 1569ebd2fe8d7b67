"""The ``dsvl-chat`` command.

``dsvl-chat`` opens the full-screen app on a terminal, and the plain REPL
with ``--plain``, when stdout or stdin is not a terminal, or when ``TERM`` is
unset or ``dumb``. ``dsvl-chat ask "question"`` answers once and exits (see
``ask`` for its exit codes). ``dsvl-chat find WORDS`` searches every saved and
autosaved conversation. ``dsvl-chat bench`` runs the engine and UI
benchmarks.

Only light modules are imported here so that ``--help`` and ``--version``
answer at once: torch, transformers, textual, prompt-toolkit and ``engine``
are imported inside the command bodies. Usage errors are one line on
stderr with exit code 2.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from typer.core import TyperCommand, TyperGroup

from dsvl_tui import __version__
from dsvl_tui.core.options import (  # light: no engine imported until called
    DEFAULT_MODEL,
    resolvable_model,
    user_settings,
)

if TYPE_CHECKING:
    from dsvl_tui.core.options import Options



def _flag_help(option: Any) -> Any:
    """``--help`` is an on/off flag too: help shows no value for it (typer's own shows ``<bool>``)."""
    if option is not None:
        option.metavar = FLAG
    return option


def _one_line_paragraphs(text: str | None) -> str | None:
    """A docstring's paragraphs each on one line: typer keeps the line breaks of every paragraph after the
    first, so help showed the source's wrapping (a break in mid-sentence) inside its own."""
    if not text:
        return text
    import inspect

    return "\n\n".join(" ".join(part.split()) for part in inspect.cleandoc(text).split("\n\n"))


class _Group(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _one_line_paragraphs(self.help)

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))


class _Command(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.help = _one_line_paragraphs(self.help)

    def collect_usage_pieces(self, ctx: Any) -> list[str]:
        # typer writes a required argument as {QUESTION}; the usual way (the README's) is QUESTION.
        pieces = super().collect_usage_pieces(ctx)
        return [p[1:-1] if p.startswith("{") and p.endswith("}") else p for p in pieces]

    def get_help_option(self, ctx: Any) -> Any:
        return _flag_help(super().get_help_option(ctx))


LOADER = "loader"  # the key in the command context's object under which main passes its loader to chat
FLAG = ""  # the metavar of an on/off flag: it takes no value, so help shows none (not "<bool>")
app = typer.Typer(add_completion=False, pretty_exceptions_enable=False, cls=_Group)

# --- options shared by the chat and ``ask`` -------------------------------------------------
# Every default is None so that "not given" can be told apart: ``ask`` options override
# the ones given before the command, and a continued transcript keeps its own values.

_GEN = "Generation"
Model = Annotated[str | None, typer.Option(
    "--model", "-m", envvar="DSVL_MODEL", show_default=False,
    help=f"Hub id or local folder of a DeepSeek-VL checkpoint (default: {DEFAULT_MODEL}).")]
Device = Annotated[str | None, typer.Option(
    envvar="DSVL_DEVICE", show_default=False, help="auto (the default), cuda, cuda:N, mps or cpu.")]
Dtype = Annotated[str | None, typer.Option(
    envvar="DSVL_DTYPE", show_default=False, help="auto (the default), bfloat16, float16 or float32.")]
Revision = Annotated[str | None, typer.Option(show_default=False, help="Hub branch, tag or commit of the model.")]
Compile = Annotated[bool, typer.Option(
    "--compile", envvar="DSVL_COMPILE", metavar=FLAG,
    help="Compile the decode step (CUDA graphs) while loading, for faster answers "
    "on CUDA; elsewhere it decodes as usual and says why.")]
Quantize = Annotated[str | None, typer.Option(
    envvar="DSVL_QUANTIZE", show_default=False, metavar="none|int8|int4",
    help="Store the language model's weights in 8 or 4 bits: faster decoding on a CPU, less GPU memory "
         "(default: none); where a mode cannot run, it loads unquantized and says why.")]
MaxBatch = Annotated[int | None, typer.Option(
    envvar="DSVL_MAX_BATCH", show_default=False, min=1,
    help="Most answers decoded together, one forward for all (requests from tabs, browser tabs or HTTP "
         "clients); the rest wait (default: 8 on CUDA without --compile, else 1).")]
System = Annotated[str | None, typer.Option(
    envvar="DSVL_SYSTEM", show_default=False, help="System prompt (default: the model's own).")]
Temperature = Annotated[float | None, typer.Option(
    show_default=False, rich_help_panel=_GEN, help="Sampling temperature; 0 is greedy (default: 0.2).")]
TopP = Annotated[float | None, typer.Option(
    show_default=False, rich_help_panel=_GEN, help="Nucleus sampling threshold, in (0, 1] (default: 0.95).")]
TopK = Annotated[int | None, typer.Option(
    show_default=False, rich_help_panel=_GEN, help="Sample from the K likeliest tokens; 0 is off (default: 50).")]
RepetitionPenalty = Annotated[float | None, typer.Option(
    show_default=False, rich_help_panel=_GEN, help="Penalty for repeating tokens; 1 is off (default: 1.1).")]
MaxNewTokens = Annotated[int | None, typer.Option(
    show_default=False, rich_help_panel=_GEN, help="Most tokens generated per answer (default: 512).")]
Seed = Annotated[int | None, typer.Option(
    show_default=False, rich_help_panel=_GEN, help="Random seed, for repeatable sampling (default: random).")]
Endpoint = Annotated[str | None, typer.Option(
    envvar="DSVL_ENDPOINT", show_default=False,
    help="Use the model of an OpenAI-compatible server at this URL (dsvl-chat serve, lmdeploy...) "
         "instead of loading one here.")]
ApiKey = Annotated[str | None, typer.Option(
    envvar="DSVL_API_KEY", show_default=False, help="API key for --endpoint (sent as a Bearer token, never saved).")]
# Options of a local engine: a usage error with --endpoint.
LOCAL_ONLY = ("device", "dtype", "compile", "quantize", "max_batch")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"dsvl-chat {__version__}")
        raise typer.Exit()


def _given(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def _text(value: str | None) -> str | None:
    """A text argument made valid: bytes that were not UTF-8 come from argv as lone surrogates.

    Paths are left alone (the OS takes them back byte for byte); the question and the system prompt
    are text for the model.
    """
    from dsvl_tui.core.text import valid_text

    return None if value is None else valid_text(value)


def build_options(values: dict[str, Any], *, theme: str | None = None, resume: bool = False) -> Options:
    """``Options`` from the given (non-None) values; a bad setting is a usage error (exit 2)."""
    from dsvl_tui.core.options import Options
    from engine.types import GenerationSettings

    endpoint = values.get("endpoint") or None
    if endpoint:
        local = [name for name in LOCAL_ONLY if values.get(name) and values.get(name) != "none"]
        if local:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in local)
            envs = ", ".join(f"DSVL_{name.upper()}" for name in local)
            it = "it" if len(local) == 1 else "them"
            raise typer.BadParameter(f"{flags} {'is' if len(local) == 1 else 'are'} for a model loaded here; with "
                                     f"--endpoint the server chooses {it}: leave {it} out ({envs} too)")
    else:
        check_engine_values(values)
    from engine.types import parse_quantize

    try:
        quantize = parse_quantize(values.get("quantize"))
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    settings = {key: values[key] for key in user_settings() if values.get(key) is not None}
    try:
        generation = GenerationSettings(**settings)
    except ValueError as exc:
        raise typer.BadParameter(str(exc)) from None
    return Options(
        model=resolvable_model(values.get("model") or DEFAULT_MODEL), device=values.get("device") or "auto",
        dtype=values.get("dtype") or "auto", revision=values.get("revision"), system=_text(values.get("system")),
        compile=bool(values.get("compile")), quantize=quantize, max_batch=values.get("max_batch"), settings=generation,
        theme=theme, resume=resume,
        endpoint=endpoint, api_key=values.get("api_key") or None,
    )


def check_engine_values(values: dict[str, Any]) -> None:
    """A usage error (exit 2) for a device or dtype the engine does not know, or a model folder that is
    not there, before torch is imported: that import takes seconds to a minute, and the engine would only
    then say the same (it checks with these very functions)."""
    from engine.types import check_device, check_dtype, local_model_problem

    for name, check in (("device", check_device), ("dtype", check_dtype)):
        if values.get(name):
            try:
                check(values[name])
            except ValueError as exc:
                raise typer.BadParameter(str(exc), param_hint=f"'--{name}'") from None
    problem = local_model_problem(values["model"]) if values.get("model") else None
    if problem is not None:
        raise typer.BadParameter(problem, param_hint="'--model'")


def use_tui(plain: bool) -> bool:
    """The full-screen app needs a real terminal on both ends, or a browser (``dsvl-chat web`` sets ``DSVL_WEB``)."""
    if os.environ.get("DSVL_WEB") == "1" and os.environ.get("TEXTUAL_DRIVER"):
        return not plain
    term = os.environ.get("TERM", "")
    return not plain and sys.stdout.isatty() and sys.stdin.isatty() and term not in ("", "dumb")


def run_chat(options: Options, *, plain: bool, loader: Callable[..., Any] | None = None) -> int:
    """The full-screen app or the plain REPL; ``loader`` (the app's model loader) is ``main``'s."""
    if use_tui(plain):
        try:
            from dsvl_tui.tui.app import run_tui
        except ImportError as exc:
            print(f"note: the full-screen app is not available ({exc}); using the plain REPL", file=sys.stderr)
        else:
            return run_tui(options, loader=loader)
    from dsvl_tui.repl.app import run_repl

    return run_repl(options)


@app.callback(invoke_without_command=True)
def chat(
    ctx: typer.Context,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    revision: Revision = None,
    compile: Compile = False,
    quantize: Quantize = None,
    max_batch: MaxBatch = None,
    system: System = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    repetition_penalty: RepetitionPenalty = None,
    max_new_tokens: MaxNewTokens = None,
    seed: Seed = None,
    endpoint: Endpoint = None,
    api_key: ApiKey = None,
    theme: Annotated[str | None, typer.Option(
        envvar="DSVL_THEME", show_default=False,
        help="Theme of the full-screen app (default: the last one used).")] = None,
    plain: Annotated[bool, typer.Option(
        "--plain", metavar=FLAG,
        help="Use the line-by-line REPL, not the full-screen app (automatic without a terminal).")] = False,
    resume: Annotated[bool, typer.Option(
        "--resume", metavar=FLAG, help="Start with the list of recent conversations.")] = False,
    version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True, metavar=FLAG, help="Print the version and exit.")] = False,
) -> None:
    """Chat with a DeepSeek-VL vision-language model in the terminal.

    Without a command: the full-screen app on a terminal, else (or with --plain) the plain REPL.
    """
    given = locals()
    loader = (ctx.obj or {}).get(LOADER)  # main(loader=...); engine.load otherwise
    values: dict[str, Any] = {
        "model": model, "device": device, "dtype": dtype, "revision": revision, "system": system,
        "compile": compile or None, "quantize": quantize, "max_batch": max_batch, "endpoint": endpoint,
        "api_key": api_key, **{name: given[name] for name in user_settings()},
    }
    ctx.obj = values
    if ctx.invoked_subcommand is not None:
        return
    options = build_options(values, theme=theme, resume=resume)
    try:
        code = run_chat(options, plain=plain, loader=loader)
    except KeyboardInterrupt:
        code = 130
    raise typer.Exit(code)


@app.command(cls=_Command)
def ask(
    ctx: typer.Context,
    question: Annotated[str, typer.Argument(
        metavar="QUESTION", show_default=False, help="The question; - reads it from stdin.")],
    image: Annotated[list[Path] | None, typer.Option(
        "--image", "-i", metavar="<path>", show_default=False, help="An image to ask about (repeat for more).")] = None,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    revision: Revision = None,
    compile: Compile = False,
    quantize: Quantize = None,
    system: System = None,
    temperature: Temperature = None,
    top_p: TopP = None,
    top_k: TopK = None,
    repetition_penalty: RepetitionPenalty = None,
    max_new_tokens: MaxNewTokens = None,
    seed: Seed = None,
    endpoint: Endpoint = None,
    api_key: ApiKey = None,
    json_output: Annotated[bool, typer.Option(
        "--json", metavar=FLAG,
        help="Print one JSON object (answer, stats, model, settings) instead of the text.")] = False,
    transcript: Annotated[Path | None, typer.Option(
        show_default=False, help="Continue this saved conversation and append the answer to it "
                                 "(a new file is created).")] = None,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", metavar=FLAG, help="No progress or stats on stderr.")] = False,
    compare: Annotated[str | None, typer.Option(
        "--compare", metavar="MODEL", show_default=False,
        help="Answer with this model too and print both answers, labelled (quote more words as /compare takes "
             "them: \"MODEL --quantize int4\", \"--temperature 1.0\", \"--endpoint URL\").")] = None,
) -> None:
    """Answer one question and exit; the answer goes to stdout, everything else to stderr.

    Exit codes: 0 done, 2 usage error, 3 bad input (image, transcript, empty question), 4 model or generation
    failure, 130 interrupted.
    """
    given = locals()
    from dsvl_tui.repl.ask import AskRequest, run_ask

    mine = {
        "model": model, "device": device, "dtype": dtype, "revision": revision, "system": system,
        "compile": compile or None,  # a flag: given before or after ask
        "quantize": quantize, "endpoint": endpoint, "api_key": api_key,
        **{name: given[name] for name in user_settings()},
    }
    values = {**_given(ctx.obj or {}), **_given(mine)}
    request = AskRequest(
        options=build_options(values), question=question, images=list(image or []), json=json_output,
        transcript=transcript, quiet=quiet, model_given="model" in values, system_given="system" in values,
        quantize_given="quantize" in values,
        settings_given={key: values[key] for key in user_settings() if key in values},
        compare=_text(compare),
    )
    raise typer.Exit(run_ask(request))


@app.command(cls=_Command)
def find(
    words: Annotated[list[str], typer.Argument(show_default=False, metavar="WORDS...",
                                               help="The words to find (all of them, in one message).")],
    json_output: Annotated[bool, typer.Option(
        "--json", metavar=FLAG, help="Print one JSON object (the results, best first) instead of the list.")] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="Most conversations listed.")] = 20,
) -> None:
    """Find words in every saved and autosaved conversation, best match first (as /find does in the app).

    Any case and accents match; a word ending in * is a prefix. Exit codes: 0 found, 1 nothing found,
    2 usage error (no word to find), 4 the search index cannot be read or made.
    """
    from dsvl_tui.commands.builtin import run_find  # sqlite3 and the index: no torch, no textual

    raise typer.Exit(run_find(" ".join(words), json_output=json_output, limit=limit))


@app.command(cls=_Command)
def bench(
    ctx: typer.Context,
    model: Annotated[str | None, typer.Option(
        "--model", "-m", show_default=False,
        help="Hub id or folder for the engine benchmark (default: a random full-size 1.3B checkpoint, "
             "written once).")] = None,
    device: Annotated[str | None, typer.Option(
        show_default=False, help="Engine benchmark device (default: auto).")] = None,
    dtype: Annotated[str | None, typer.Option(
        show_default=False, help="Engine benchmark dtype (default: auto).")] = None,
    layers: Annotated[int | None, typer.Option(
        show_default=False,
        help="Use a random 1.3B checkpoint with only N language-model layers (quick runs).")] = None,
    new_tokens: Annotated[int | None, typer.Option(
        show_default=False, help="Forced answer length per turn in the engine benchmark (default: 32).")] = None,
    compile: Annotated[bool, typer.Option(
        "--compile", metavar=FLAG,
        help="Our way decodes with the compiled step where it can (upstream's stays eager).")] = False,
    skip_engine: Annotated[bool, typer.Option(
        "--skip-engine", metavar=FLAG, help="Leave out the engine benchmark.")] = False,
    skip_ui: Annotated[bool, typer.Option(
        "--skip-ui", metavar=FLAG, help="Leave out the UI and start-up benchmark.")] = False,
) -> None:
    """Run the benchmarks: the engine's (upstream's way against ours), then the UI's and start-up's.

    Each prints a table and writes its results as JSON in the current folder: bench.json (the engine's),
    then uibench.json (the UI's); the same as python -m dsvl_tui.bench.engine, then python -m dsvl_tui.bench.ui.
    """
    # --model, --device and --dtype given before the command count too; DSVL_MODEL and the like do not:
    # the benchmark's default model is a random checkpoint, not the one the app is set to use.
    values = {"model": model, "device": device, "dtype": dtype, "layers": layers, "new_tokens": new_tokens}
    for name in ("model", "device", "dtype"):
        if values[name] is None:
            values[name] = _typed(ctx.parent, name)
    # Its model is checked by the benchmark (a stand-in name may mean its random checkpoint).
    check_engine_values({"device": values["device"], "dtype": values["dtype"]})
    code = 0
    if not skip_engine:
        from dsvl_tui.bench.engine import main as engine_bench

        argv = [f"--{name.replace('_', '-')}={value}" for name, value in values.items() if value is not None]
        if compile or _typed(ctx.parent, "compile"):
            argv.append("--compile")
        code = engine_bench(argv)
    if not skip_ui:
        from dsvl_tui.bench.ui import main as ui_bench

        code = max(code, ui_bench([]))
    raise typer.Exit(code)


@app.command(cls=_Command)
def serve(
    ctx: typer.Context,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    revision: Revision = None,
    compile: Compile = False,
    quantize: Quantize = None,
    max_batch: MaxBatch = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on; anything but loopback needs --api-key.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8000,
    api_key: Annotated[str | None, typer.Option(
        envvar="DSVL_SERVE_API_KEY", show_default=False,
        help="Require this key from clients ('Authorization: Bearer KEY'). Without it a random key is made "
             "and printed at start: on loopback too, since every account on this machine can reach it.")] = None,
    no_api_key: Annotated[bool, typer.Option(
        "--no-api-key", help="Serve without a key (loopback only): every account on this machine can then "
        "use the model and, by timing answers, guess at others' prompts it keeps for reuse.")] = False,
    max_body_mib: Annotated[int, typer.Option(min=1, help="Largest request body, in MiB.")] = 32,
    max_images: Annotated[int, typer.Option(min=0, help="Most images in one request.")] = 8,
    queue_size: Annotated[int, typer.Option(
        min=0, help="Most requests waiting behind the running ones (--max-batch run at once).")] = 16,
) -> None:
    """Serve the model over an OpenAI-compatible HTTP API (POST /v1/chat/completions, GET /v1/models, GET /health)."""
    from dsvl_tui.serve.server import run_serve

    if no_api_key and api_key:
        raise typer.BadParameter("--no-api-key and --api-key (or DSVL_SERVE_API_KEY) contradict each other; give one")
    _require_secret(host, api_key, "--api-key KEY", "DSVL_SERVE_API_KEY")
    if _typed(ctx, "api_key"):
        print("note: a key on the command line is visible to every account on this machine (ps); "
              "set DSVL_SERVE_API_KEY instead", file=sys.stderr)
    values = _engine_values(ctx, model=model, device=device, dtype=dtype, revision=revision, compile=compile,
                            quantize=quantize, max_batch=max_batch)
    from dsvl_tui.serve.requests import Limits, MiB

    limits = Limits(max_body_bytes=max_body_mib * MiB, max_images=max_images, queue_size=queue_size)
    raise typer.Exit(run_serve(build_options(values), host=host, port=port, api_key=api_key, limits=limits,
                               make_key=not no_api_key))


@app.command(cls=_Command)
def web(
    ctx: typer.Context,
    model: Model = None,
    device: Device = None,
    dtype: Dtype = None,
    revision: Revision = None,
    compile: Compile = False,
    quantize: Quantize = None,
    max_batch: MaxBatch = None,
    host: Annotated[str, typer.Option(
        help="Address to listen on; anything but loopback needs a token of your own "
             "(DSVL_WEB_TOKEN or --token-file).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port to listen on.")] = 8080,
    token: Annotated[str | None, typer.Option(
        "--token", "--password", envvar="DSVL_WEB_TOKEN", show_default=False,
        help="The token browsers must give (default: a random one, printed in the URL). On the command line "
             "every user can read it: prefer DSVL_WEB_TOKEN or --token-file.")] = None,
    token_file: Annotated[Path | None, typer.Option(
        "--token-file", metavar="PATH", show_default=False,
        help="Read the token from this file (yours, mode 600).")] = None,
) -> None:
    """Serve the app to web browsers: the model loads once, every browser tab is a chat app of its own.

    Prints the URL to open (with a random token in it unless you give one); Ctrl-C stops the server, the
    model and every tab's app.
    """
    from dsvl_tui.web.launcher import WebOptions, run_web
    from dsvl_tui.web.secret import COMMAND_LINE_WARNING, SecretError, check_token, read_token_file

    flag = "--token TOKEN"
    try:
        if token_file is not None:
            if token is not None:
                raise typer.BadParameter("--token-file and --token (or DSVL_WEB_TOKEN) both give the token: "
                                         "give one")
            token, flag = read_token_file(token_file), "--token-file PATH"
        elif token is not None:
            from_env = getattr(ctx.get_parameter_source("token"), "name", "") == "ENVIRONMENT"
            token = check_token(token, "DSVL_WEB_TOKEN" if from_env else "--token")
            if not from_env:
                print(COMMAND_LINE_WARNING, file=sys.stderr)
    except SecretError as exc:
        raise typer.BadParameter(str(exc)) from None
    _require_secret(host, token, flag, "DSVL_WEB_TOKEN")
    values = _engine_values(ctx, model=model, device=device, dtype=dtype, revision=revision, compile=compile,
                            quantize=quantize, max_batch=max_batch)
    before = _given(ctx.obj or {})
    if before.get("endpoint"):
        raise typer.BadParameter("--endpoint: dsvl-chat web starts its own model server; leave it out")
    app_args = [f"--{name.replace('_', '-')}={before[name]}" for name in ("system", *user_settings()) if name in before]
    build_options({**before, **values})  # a bad value is a usage error here, before anything starts
    engine_args = [f"--{name.replace('_', '-')}={value}" for name, value in values.items() if name != "compile"]
    engine_args += ["--compile"] if values.get("compile") else []
    raise typer.Exit(run_web(WebOptions(host=host, port=port, token=token, engine_args=engine_args,
                                        app_args=app_args)))


MIN_EXPOSED_SECRET = 16  # characters of a secret guarding a server other machines reach


def _require_secret(host: str, secret: str | None, flag: str, env: str) -> None:
    """A server reachable from other machines needs its secret (``serve``'s key, ``web``'s token), and a long one."""
    from dsvl_tui.serve.server import is_loopback

    if is_loopback(host):
        return
    if not secret:
        raise typer.BadParameter(f"--host {host} is reachable from other machines: give {flag} "
                                 f"(or {env}), or keep the default 127.0.0.1")
    if len(secret) < MIN_EXPOSED_SECRET:
        raise typer.BadParameter(f"{flag.split()[0]} is too short for --host {host}, which other machines reach: "
                                 f"use {MIN_EXPOSED_SECRET} characters or more")


def _engine_values(ctx: typer.Context, **mine: Any) -> dict[str, Any]:
    """The engine options a server command loads with: its own, over those given before the command."""
    mine["compile"] = mine["compile"] or None  # a flag left off is not a choice
    return {**{k: v for k, v in _given(ctx.obj or {}).items() if k in mine}, **_given(mine)}


def _typed(ctx: Any, name: str) -> Any:
    """The value of option ``name`` of ``ctx`` if it was given on the command line (not from the environment)."""
    if ctx is None:
        return None
    source = ctx.get_parameter_source(name)
    return ctx.params.get(name) if source is not None and source.name == "COMMANDLINE" else None


def report_crash(exc: BaseException) -> int:
    """One ``error:`` line on stderr for an unexpected exception, its traceback appended to the crash log.

    Returns exit code 1. Should the log be unwritable, the traceback goes to stderr after the line.
    """
    from dsvl_tui.core.crash import record

    line, details = record(exc)
    print(line, file=sys.stderr)
    if details is not None:
        print(details, end="", file=sys.stderr)
    return 1


def main(argv: list[str] | None = None, *, loader: Callable[..., Any] | None = None) -> None:
    """Console-script entry point. ``loader`` stands in for ``engine.load`` in the full-screen app (the UI
    bench's start-up child records when the load starts with it).

    Usage errors become one line on stderr (exit code 2); an unexpected error one line, exit code 1,
    and its traceback in ``crash.log`` in the data folder.
    """
    try:
        from typer._click import exceptions as click_errors  # typer 0.26+ ships its own copy of click
    except ImportError:  # older typer: click itself
        from click import exceptions as click_errors  # type: ignore[no-redef]
    from dsvl_tui.core.text import error_line

    try:
        code = app(args=argv, prog_name="dsvl-chat", standalone_mode=False, obj={LOADER: loader})
    except click_errors.UsageError as exc:
        where = exc.ctx.command_path if exc.ctx is not None else "dsvl-chat"
        message = error_line(exc.format_message())
        print(f"error: {message} (see '{where} --help')", file=sys.stderr)
        sys.exit(exc.exit_code)
    except click_errors.ClickException as exc:
        print(f"error: {error_line(exc.format_message())}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Abort:  # Abort lives in typer itself, not in its copy of click's exceptions
        sys.exit(130)
    except Exception as exc:  # noqa: BLE001 - a bug must not look like success, nor only a traceback
        sys.exit(report_crash(exc))
    sys.exit(code if isinstance(code, int) else 0)


if __name__ == "__main__":
    main()
