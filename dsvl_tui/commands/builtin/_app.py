"""Commands on the app around the conversation: tabs, the model, the theme, help and quitting."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from dsvl_tui.commands.builtin._shared import shell_words
from dsvl_tui.commands.registry import CommandError, registry
from dsvl_tui.commands.session import HelpSection, Session
from dsvl_tui.core.options import resolvable_model

if TYPE_CHECKING:  # pragma: no cover
    from dsvl_tui.backends.remote import RemoteBackend


@registry.command("new", "Start a new conversation", "/new")
def new(session: Session, args: str) -> None:
    """The TUI opens it in a new tab; the REPL switches to it (the current one stays in
    /resume)."""
    session.new_pane()


@registry.command("close", "Close this tab", "/close", frontends=("tui",))
def close(session: Session, args: str) -> None:
    """The conversation stays in /resume."""
    session.close_pane()


def _switch(session: Session, offset: int) -> None:
    switch = getattr(session, "switch_pane", None)
    if switch is None:
        raise CommandError("this front end shows one conversation; /resume switches to another")
    switch(offset)


@registry.command("next", "Go to the next tab", "/next", frontends=("tui",))
def next_pane(session: Session, args: str) -> None:
    _switch(session, 1)


@registry.command("prev", "Go to the previous tab", "/prev", frontends=("tui",))
def prev_pane(session: Session, args: str) -> None:
    _switch(session, -1)


@registry.command("model", "Show the model, or load another", "/model [ID | PATH]", completes_paths=True)
def model(session: Session, args: str) -> None:
    """ID is a Hugging Face Hub id (deepseek-ai/deepseek-vl-7b-chat), PATH a local checkpoint
    folder. It loads in the background; the current model answers until it is ready. With
    --endpoint the server chooses the model: /model lists the ones it serves and picks one of those."""
    words = shell_words(args)
    if len(words) > 1:
        raise CommandError("usage: /model ID | PATH")
    find_server = getattr(session, "model_server", None)
    server = find_server() if find_server is not None else None
    if server is not None:
        _server_model(session, server, words[0] if words else None)
        return
    if not words:
        session.info(f"model: {session.conversation.model or 'none loaded'}")
        return
    target = words[0]
    chosen = resolvable_model(str(Path(target).expanduser()) if target.startswith("~") else target)
    session.change_model(chosen)
    session.info(f"loading {chosen} in the background; the current model answers until it is ready")


def _server_model(session: Session, server: RemoteBackend, wanted: str | None) -> None:
    """``/model`` with ``--endpoint``: nothing loads here. The server's list (asked off the UI's thread) is shown,
    and a model it lists is the one the next message asks for; any other name is refused, saying which it serves."""
    from dsvl_tui.backends.remote import RemoteError
    from dsvl_tui.backends.remote_probe import PROBE_TIMEOUT

    def ask() -> list[str]:
        try:
            server.refresh(timeout=PROBE_TIMEOUT)
        except RemoteError as exc:
            raise CommandError(f"model: not known ({exc})") from None
        return list(server.served)

    def answer(served: list[str]) -> None:
        listed = ", ".join(served)
        if wanted is None:
            others = f"; it serves {listed} (/model NAME picks one)" if len(served) > 1 else ""
            session.info(f"model: {server.info.model_id}, served by {server.where}, which chooses it{others}")
        elif server.choose(wanted):
            session.conversation.model = wanted
            session.info(f"model: {wanted} (served by {server.where}); the next message asks it")
        else:
            raise CommandError(f"{server.where} chooses the model and serves only {listed}: "
                               "/model NAME picks one of those; to load another, start it there (or run "
                               "dsvl-chat without --endpoint)")

    session.read_then(ask, answer)


@registry.command("theme", "Switch the colour theme, or list them", "/theme [NAME]", frontends=("tui",))
def theme(session: Session, args: str) -> None:
    """Without NAME: the themes, the current one marked. The choice is remembered for the next start."""
    name = args.strip()
    if not name:
        from themes import theme_names

        current = session.theme_name()
        rows = [f"{'*' if each == current else ' '} {each}" for each in theme_names()]
        session.info("\n".join(["themes (* the current one; /theme NAME switches):", *rows]))
        return
    try:
        session.set_theme(name)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    session.info(f"theme: {name} (remembered for the next start)")


@registry.command("help", "List the commands, or explain one", "/help [COMMAND]", aliases=("?",))
def help_command(session: Session, args: str) -> None:
    """`/help COMMAND` shows what a command does; a message that starts with a slash can be
    sent by doubling it (`//etc/hosts is...`)."""
    name = args.strip()
    if name:
        cmd, _ = registry.parse("/" + name.lstrip("/"), session.frontend)
        aliases = f" (also {', '.join('/' + a for a in cmd.aliases)})" if cmd.aliases else ""
        lines = [f"{cmd.usage}: {cmd.summary}{aliases}"]
        if cmd.handler.__doc__:  # its `code` marks are for the source, not the screen
            lines.append(" ".join(cmd.handler.__doc__.replace("`", "").split()))
        if cmd.name == "theme":  # what NAME can be is only known here, from the themes folder
            from themes import theme_names

            lines.append(f"themes: {', '.join(theme_names())}")
        session.info("\n".join(lines))
        return
    rows = tuple((c.usage, c.summary) for c in registry.commands(session.frontend))
    session.show_help([HelpSection("Commands", rows)])


@registry.command("quit", "Leave the app", "/quit", aliases=("exit",))
def quit_command(session: Session, args: str) -> None:
    """Conversations are saved as you go (/resume brings them back)."""
    session.quit()
