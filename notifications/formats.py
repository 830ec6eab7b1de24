"""Webhook bodies and their signature.

The signature header is `X-SRIOV-Console-Signature: sha256=<hex>`: HMAC-SHA256 over the exact
body bytes with the webhook's secret (GitHub's scheme, so receivers have code for it). The body
carries the time and the delivery id, so a receiver can refuse replays of old bodies.
"""

import hashlib
import hmac
import json

SIGNATURE_HEADER = "X-SRIOV-Console-Signature"
EVENT_HEADER = "X-SRIOV-Console-Event"
DELIVERY_HEADER = "X-SRIOV-Console-Delivery"


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def verify(secret: str, body: bytes, header: str) -> bool:
    return hmac.compare_digest(sign(secret, body), header or "")


def _slack(notice) -> dict:
    # Incoming webhooks take mrkdwn in "text"; `<url|label>` is a link.
    return {"text": f"*{notice.title}*\n{notice.text}\n<{notice.url}|Open in the SR-IOV Console>"}


def _teams(notice) -> dict:
    # The MessageCard format of Teams' incoming-webhook connector.
    colour = {"approval_needed": "0078D7", "change_decided": "2E7D32", "rollout_finished": "6A1B9A",
              "host_alert": "C62828"}.get(notice.topic, "555555")
    return {
        "@type": "MessageCard",
        "@context": "https://schema.org/extensions",
        "summary": notice.title,
        "themeColor": colour,
        "title": notice.title,
        "text": notice.text.replace("\n", "\n\n"),
        "potentialAction": [
            {"@type": "OpenUri", "name": "Open in the SR-IOV Console",
             "targets": [{"os": "default", "uri": notice.url}]}
        ],
    }


def body_for(payload_format: str, notice, delivery_id: int) -> str:
    if payload_format == "slack":
        document = _slack(notice)
    elif payload_format == "teams":
        document = _teams(notice)
    else:
        document = dict(notice.document(), delivery=delivery_id)
    return json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
