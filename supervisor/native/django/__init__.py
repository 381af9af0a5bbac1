"""Django integration: add "supervisor.native.django" to INSTALLED_APPS for the
`manage.py native_worker` command and task autodiscovery."""
