from django.apps import AppConfig


class ChangesConfig(AppConfig):
    name = "changes"
    verbose_name = "Changes"

    def ready(self):
        from hosts.intents import register_drift_source

        from .drift import operation_drift

        register_drift_source(operation_drift)
