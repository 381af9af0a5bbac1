from django.apps import AppConfig


class NativeWorkerConfig(AppConfig):
    name = "supervisor.native.django"
    label = "start_all_native"
    verbose_name = "start-all native worker"
