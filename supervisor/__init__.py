"""start-all: run a web server and its background worker in one container, as a proper PID 1.

The import package is kept free of heavy imports: the supervisor's running loop
(`supervisor.runner`) imports only the standard library.
"""

__version__ = "0.1.0"
