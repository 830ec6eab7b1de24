from django.urls import path

from . import views

app_name = "audit"

urlpatterns = [
    path("", views.event_list, name="list"),
    path("export/", views.export, name="export"),
    path("host-names/", views.host_names, name="host_names"),
    path("<int:pk>/", views.event_detail, name="detail"),
]
