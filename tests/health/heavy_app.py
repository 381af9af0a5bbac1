"""A WSGI app as heavy as a real one: each worker holds $APP_MIB MiB of its own memory (a big
Django project's imports and caches), written so that it is resident, not just reserved."""

import os

PAGE = 4096
_held = bytearray(int(os.environ.get("APP_MIB", "110")) * 1024 * 1024)
_held[::PAGE] = b"x" * (len(_held) // PAGE)  # touch every page


def app(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"a heavy page\n"]
