"""``dsvl-chat web``: the app in a browser, every tab a thin client of one model server.

``launcher`` starts ``dsvl-chat serve`` once on a random loopback port with a
generated API key, then ``server``: textual-serve's aiohttp application,
wrapped with authentication, an upload route and a page that loads nothing
from outside the server. Each browser tab runs ``dsvl-chat`` with
``--endpoint`` (through its environment) in a process group the launcher
kills on exit. See docs/web.md.
"""
