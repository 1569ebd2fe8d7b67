"""What every front end shares and none draws: the conversation model, the one answer runner (``turn``),
the typed settings, the one text sanitiser, the stats line, the crash record.

Everything here imports neither Textual nor a front end: the app (``tui``), the REPL and ``ask``
(``repl``), the commands, ``serve`` and ``storage`` all build on it, and it builds on nothing of
theirs.
"""
