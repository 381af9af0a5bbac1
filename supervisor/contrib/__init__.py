"""Serve the supervisor's combined health on the application's own port ($PORT).

`wsgi.HealthMiddleware`, `asgi.HealthMiddleware` and the Django middleware/view all ask the
running supervisor (over the unix socket it names in START_ALL_HEALTH_SOCKET, else
START_ALL_HEALTH_URL) and pass its answer on; they never touch the application or the
database. When no supervisor answers they say so with 503, never 500.
"""
