from django.urls import path
from newsletter import views

urlpatterns = [
    path("", views.index),
    path("subscribe", views.subscribe),
    path("exports", views.start_export),
    path("exports/<str:task_id>", views.export_status),
]
