import pytest
from django.db import connection


@pytest.fixture
def vendor():
    return connection.vendor


@pytest.fixture
def superuser(db):
    from tests.conftest import make_user

    return make_user("root-admin", is_staff=True, is_superuser=True)
