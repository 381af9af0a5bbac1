"""`from supervisor.native.signals import task_success`: the native signals, or with
USE_DB_QUEUE=false Celery's own (celery.signals), like every other name of the package."""

from supervisor.native import use_db_queue

if use_db_queue():
    from supervisor.native.dispatch import *  # noqa: F403
    from supervisor.native.dispatch import __all__  # noqa: F401
else:
    from celery.signals import *  # noqa: F403
    from celery.signals import __all__  # noqa: F401
