"""The site's own periodic job, created as a django-q2 Schedule row."""

from django.db import migrations


def create_schedule(apps, schema_editor):
    Schedule = apps.get_model("django_q", "Schedule")
    Schedule.objects.create(
        name="weekly digest",
        func="newsletter.tasks.send_digest",
        schedule_type="C",
        cron="0 7 * * 1",
        repeats=-1,
    )


class Migration(migrations.Migration):
    dependencies = [("newsletter", "0001_initial"), ("django_q", "0018_task_success_index")]
    operations = [migrations.RunPython(create_schedule, migrations.RunPython.noop)]
