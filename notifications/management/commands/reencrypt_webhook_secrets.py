from django.core.management.base import BaseCommand

from notifications.services import reencrypt_all


class Command(BaseCommand):
    help = ("Re-encrypt every webhook URL and secret under the first of CREDENTIAL_KEYS "
            "(run after rotate_credentials_key, before dropping the old key).")

    def handle(self, *args, **options):
        count = reencrypt_all()
        self.stdout.write(f"{count} webhook(s) re-encrypted under the newest key")
