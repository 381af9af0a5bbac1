"""Applications wrapped in the health middlewares, served by real gunicorn / uvicorn."""

import os

from supervisor.contrib import asgi, wsgi


def _hello(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"hello from the app\n"]


async def _hello_asgi(scope, receive, send):
    assert scope["type"] == "http"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", b"text/plain")]})
    await send({"type": "http.response.body", "body": b"hello from the app\n"})


wsgi_app = wsgi.HealthMiddleware(_hello, path="/healthz")
asgi_app = asgi.HealthMiddleware(_hello_asgi, path="/healthz")


def django_app():
    """gunicorn 'tests.health.apps:django_app()'."""
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "tests.health.djsite")
    from django.core.wsgi import get_wsgi_application

    return get_wsgi_application()
