"""Print the sudoers rule that lets a dedicated SSH user run the agent as root, and nothing else.

The controller always runs the constant `remote.protocol.BOOTSTRAP_COMMAND` (with `sudo -n ` in
front when the SSH user is not root), so the rule can name the exact command line. sudoers needs
`,:=[]*?!"#` escaped, and a backslash doubled twice (once for the sudoers lexer, once for its
argument matching). docs/security.md explains the caveats.
"""

from django.core.management.base import BaseCommand

from remote.protocol import BOOTSTRAP

SUDOERS_SPECIAL = ',:=[]*?!"#'


def sudoers_escape(text: str) -> str:
    out = []
    for char in text:
        if char == "\\":
            out.append("\\" * 4)
        elif char in SUDOERS_SPECIAL:
            out.append("\\" + char)
        else:
            out.append(char)
    return "".join(out)


def sudoers_rule(user: str = "sriov-console", python: str = "/usr/bin/python3") -> str:
    return f"{user} ALL=(root) NOPASSWD: {python} -c {sudoers_escape(BOOTSTRAP)}"


class Command(BaseCommand):
    help = "Print the sudoers line for a dedicated (non-root) SSH user on the hypervisors."

    def add_arguments(self, parser):
        parser.add_argument("--user", default="sriov-console")
        parser.add_argument("--python", default="/usr/bin/python3",
                            help="absolute path python3 resolves to on the hypervisors")

    def handle(self, *args, user, python, **options):
        self.stdout.write(sudoers_rule(user, python))
