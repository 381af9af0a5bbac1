from supervisor.native import shared_task


@shared_task
def double(x):
    return 2 * x
