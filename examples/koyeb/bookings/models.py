from django.db import models


class Booking(models.Model):
    name = models.CharField(max_length=100)
    email = models.EmailField()
    created_at = models.DateTimeField(auto_now_add=True)
    confirmed_at = models.DateTimeField(null=True)  # set when the confirmation e-mail is sent

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "name": self.name,
            "email": self.email,
            "created_at": self.created_at.isoformat(),
            "confirmed_at": self.confirmed_at and self.confirmed_at.isoformat(),
        }


class Summary(models.Model):
    """A slow, AI-style job: queued, running, done."""

    text = models.TextField()
    seconds = models.FloatField(default=5)  # how long the "model" thinks
    status = models.CharField(max_length=10, default="queued")
    attempts = models.PositiveIntegerField(default=0)
    result = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    finished_at = models.DateTimeField(null=True)

    def as_dict(self) -> dict:
        return {
            "id": self.id,
            "status": self.status,
            "attempts": self.attempts,
            "result": self.result,
            "finished_at": self.finished_at and self.finished_at.isoformat(),
        }


class Run(models.Model):
    """One execution of a tally task (docs/scaling.md): proves that every queued task ran, and
    ran once, whichever worker container took it."""

    task_id = models.CharField(max_length=64, db_index=True)
    kind = models.CharField(max_length=10, default="job")  # "job" or "tick" (a beat entry)
    n = models.IntegerField(default=0)
    host = models.CharField(max_length=100)  # the worker container's hostname
    at = models.DateTimeField(auto_now_add=True)
