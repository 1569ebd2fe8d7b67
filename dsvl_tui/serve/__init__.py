"""``dsvl-chat serve``: the engine behind an OpenAI-compatible HTTP API.

``requests`` turns a chat-completions request into engine messages (images
decoded from ``data:`` URLs, in memory, within the limits), ``queue`` runs
one generation at a time with a bounded queue in front, ``app`` is the
FastAPI application and ``server`` runs it with uvicorn (``protocol``:
uvicorn's HTTP/1.1 with a deadline on each request's head). FastAPI, uvicorn
and pydantic are imported only by these modules.
"""
