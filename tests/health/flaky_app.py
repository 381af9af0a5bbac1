"""A WSGI app whose pages break on demand: they answer 500 while $BROKEN_FLAG exists (as a
Django site does without its collectstatic manifest), and take 30 s while $SLOW_FLAG does."""

import os
import time


def app(environ, start_response):
    if os.path.exists(os.environ.get("SLOW_FLAG", "/nonexistent")):
        time.sleep(30)
    if os.path.exists(os.environ["BROKEN_FLAG"]):
        start_response("500 Internal Server Error", [("Content-Type", "text/plain")])
        return [b"Server Error (500)\n"]
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"a page\n"]
