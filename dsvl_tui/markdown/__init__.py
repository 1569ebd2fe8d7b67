"""Answers drawn as Markdown, for the app and the REPL: ``render`` cuts an answer into blocks and
draws them through rich, ``budget`` says what a block may cost before it is parsed, ``look`` styles
them from a Textual theme.
"""
