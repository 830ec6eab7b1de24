from django.urls import path

from . import views, views_credentials, views_vfs

app_name = "hosts"

urlpatterns = [
    path("", views.host_list, name="list"),
    path("add/", views.host_add, name="add"),
    path("import/", views.host_import, name="import"),
    path("selection/", views.host_selection, name="selection"),
    path("<int:pk>/", views.host_detail, name="detail"),
    path("<int:pk>/edit/", views.host_edit, name="edit"),
    path("<int:pk>/delete/", views.host_delete, name="delete"),
    path("<int:pk>/refresh/", views.host_refresh, name="refresh"),
    path("nics/<int:pk>/", views.nic_detail, name="nic"),
    path("vfs/", views_vfs.vf_usage, name="vf_usage"),
    # Administrators: SSH credentials and host-key trust (hosts/views_credentials.py).
    path("credentials/", views_credentials.credential_list, name="credentials"),
    path("credentials/add/", views_credentials.credential_add, name="credential_add"),
    path("credentials/<int:pk>/edit/", views_credentials.credential_edit, name="credential_edit"),
    path("credentials/<int:pk>/rotate/", views_credentials.credential_rotate, name="credential_rotate"),
    path("credentials/<int:pk>/delete/", views_credentials.credential_delete, name="credential_delete"),
    path("<int:pk>/key/", views_credentials.host_key, name="key"),
    path("<int:pk>/key/accept/", views_credentials.host_key_accept, name="key_accept"),
]
