from changes import services
from tests.changes.conftest import change_data, make_credential, make_host


def submitted_change(requester, name="hv-notify"):
    host = make_host(name, credential=make_credential(f"cred-{name}"), nics=[("eno49", "0000:04:00.0", 0)])
    change = services.create_change(change_data([host.pk]), requester)
    return services.submit_change(change.pk, requester)


def webhook(admin, url, *, topics, payload_format="json", secret="", name="ops-hook"):
    from notifications.services import create_webhook

    return create_webhook({"name": name, "url": url, "payload_format": payload_format, "topics": topics,
                           "enabled": True, "secret": secret}, admin)
