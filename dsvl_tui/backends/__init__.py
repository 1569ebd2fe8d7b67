"""What answers: ``choose`` loads the backend a front end asks for (a local ``engine`` or a model
server), ``remote`` and its ``remote_*`` helpers speak OpenAI's chat-completions API to a server as
untrusted input, ``image_urls`` sends pictures to one.
"""
