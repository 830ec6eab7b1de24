app_name = "hosts"

urlpatterns = []
