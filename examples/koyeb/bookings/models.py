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
