"""Who may do what: the console's permissions and the roles (Django groups) that hold them. The
groups are created from this table by console/migrations/0002_roles.py (docs/security.md)."""

PERMISSIONS = {
    "view_fleet": "Can view the dashboard, hosts and changes",
    "operate": "Can manage hosts, run discovery and request changes",
    "approve": "Can approve or reject changes requested by others",
    "audit": "Can review and export the audit history",
    "administer": "Can manage credentials, host-key trust and users",
}

ROLE_PERMISSIONS = {
    "viewer": ["view_fleet"],
    "operator": ["view_fleet", "operate"],
    "approver": ["view_fleet", "approve"],
    "auditor": ["view_fleet", "audit"],
    "admin": ["view_fleet", "operate", "approve", "audit", "administer"],
}
