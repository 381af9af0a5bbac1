from bookings import views
from django.urls import path

urlpatterns = [
    path("", views.index),
    path("stats", views.stats),
    path("bookings", views.bookings),
    path("bookings/<int:booking_id>", views.booking),
    path("summaries", views.summaries),
    path("summaries/<int:summary_id>", views.summary),
    path("tallies", views.tallies),
]
