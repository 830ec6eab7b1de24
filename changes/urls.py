from django.urls import path

from . import views

app_name = "changes"

urlpatterns = [
    path("", views.change_list, name="list"),
    path("new/", views.change_new, name="new"),
    path("preview/", views.change_preview, name="preview"),
    path("queue/", views.approval_queue, name="queue"),
    path("steps/<int:pk>/", views.step_detail, name="step"),
    path("<int:pk>/", views.change_detail, name="detail"),
    path("<int:pk>/edit/", views.change_edit, name="edit"),
    path("<int:pk>/rollout/", views.change_rollout, name="rollout"),
    path("<int:pk>/submit/", views.change_submit, name="submit"),
    path("<int:pk>/approve/", views.change_approve, name="approve"),
    path("<int:pk>/reject/", views.change_reject, name="reject"),
    path("<int:pk>/cancel/", views.change_cancel, name="cancel"),
    path("<int:pk>/retry/", views.change_retry, name="retry"),
]
