"""Lift a login lockout at once (console/security.py) instead of waiting for the window."""

from django.core.management.base import BaseCommand

from audit.services import record
from console.models import LoginAttempt
from console.security import clear_failures


class Command(BaseCommand):
    help = "Forget the failed logins of user names (or, with --ip, of client addresses)."

    def add_arguments(self, parser):
        parser.add_argument("usernames", nargs="*")
        parser.add_argument("--ip", action="append", default=[], help="a client address to unlock")

    def handle(self, *args, usernames, ip, **options):
        for username in usernames:
            count = clear_failures(username)
            record("auth.unlocked", actor_name="manage.py", data={"username": username, "failures": count})
            self.stdout.write(f"{username}: {count} failed login(s) forgotten")
        for address in ip:
            count, _ = LoginAttempt.objects.filter(client_ip=address).delete()
            record("auth.unlocked", actor_name="manage.py", data={"client_ip": address, "failures": count})
            self.stdout.write(f"{address}: {count} failed login(s) forgotten")
