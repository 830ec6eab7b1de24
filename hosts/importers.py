"""Parsers for host import files. Each returns a list of row dicts for services.import_hosts:

    {"line": <source line>, "name", "address", "port", "username", "credential", "labels": [...]}

    parse_csv(text)   header: name,address,port,username,credential,labels[,description]
                      (only name is required; labels separated by ';' or spaces; address defaults
                      to the name, like Ansible)
    parse_ini(text)   Ansible INI inventory: [group] sections with
                      `host ansible_host=... ansible_port=... ansible_user=...`, [group:vars],
                      [group:children]; numeric ranges such as hv[01:24]
    parse_yaml(text)  Ansible YAML inventory: all/children/hosts/vars, the same variables
    parse(text, fmt)  fmt: "csv" | "ini" | "yaml"; guess_format(filename, text) picks one

Group names become labels (except `all` and `ungrouped`). A `credential` variable (INI/YAML)
names the console credential for a host. A problem with the file itself raises ParseError with the
line; problems with values are found by import_hosts, which names the line too.
"""

from __future__ import annotations

import csv
import io
import re
import shlex

import yaml

CSV_COLUMNS = ("name", "address", "port", "username", "credential", "labels", "description")
FORMATS = ("csv", "ini", "yaml")
HOST_VARS = {
    "ansible_host": "address",
    "ansible_ssh_host": "address",
    "ansible_port": "port",
    "ansible_ssh_port": "port",
    "ansible_user": "username",
    "ansible_ssh_user": "username",
    "credential": "credential",
    "console_credential": "credential",
    "description": "description",
}
SKIP_GROUPS = {"all", "ungrouped"}
MAX_HOSTS = 100_000


class ParseError(ValueError):
    def __init__(self, message: str, line: int | None = None):
        self.line = line
        super().__init__(f"line {line}: {message}" if line else message)


def guess_format(filename: str = "", text: str = "") -> str:
    name = (filename or "").lower()
    if name.endswith(".csv"):
        return "csv"
    if name.endswith((".yml", ".yaml")):
        return "yaml"
    if name.endswith((".ini", ".cfg", ".hosts")) or name.endswith("hosts"):
        return "ini"
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line and not line.startswith(("#", ";"))]
    head = lines[0] if lines else ""
    if head.startswith("[") or re.match(r"^\S+\s+ansible_", head):
        return "ini"
    if head.startswith(("all:", "---")) or re.match(r"^[\w.-]+:\s*$", head):
        return "yaml"
    return "csv"


def parse(text: str, fmt: str) -> list[dict]:
    """Rows of the file; a file that cannot be read as `fmt`, or a value no host field can hold
    (NUL and other control characters), raises ParseError naming the line."""
    if fmt not in FORMATS:
        raise ParseError(f"unknown format {fmt!r}; use one of {', '.join(FORMATS)}")
    _refuse_control_characters(text)
    try:
        rows = {"csv": parse_csv, "ini": parse_ini, "yaml": parse_yaml}[fmt](text)
    except RecursionError:
        raise ParseError("the file is nested too deeply to be an inventory") from None
    for row in rows:
        _refuse_control_values(row)
    return rows


# Tab, LF and CR are line structure; every other C0 control character (NUL above all, which
# PostgreSQL cannot store in text) and DEL are refused wherever they appear.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def _describe_control(char: str) -> str:
    return "a NUL byte" if char == "\x00" else f"the control character U+{ord(char):04X}"


def _refuse_control_characters(text: str) -> None:
    match = _CONTROL.search(text)
    if match:
        line = text.count("\n", 0, match.start()) + 1
        raise ParseError(f"contains {_describe_control(match.group())}; host files are plain text", line)


def _refuse_control_values(row: dict) -> None:
    """Values built from escapes (YAML "\\0", "\\x01") that the raw text check cannot see."""
    for key, value in row.items():
        for item in value if isinstance(value, list) else [value]:
            if isinstance(item, str) and (match := _CONTROL.search(item) or re.search(r"[\r\n]", item)):
                what = "a line break" if match.group() in "\r\n" else _describe_control(match.group())
                raise ParseError(f"{key} of host {row.get('name', '')!r} contains {what}", row.get("line"))


# ---------------------------------------------------------------------------------------------
# CSV
# ---------------------------------------------------------------------------------------------


def parse_csv(text: str) -> list[dict]:
    text = text.lstrip("\ufeff")
    reader = csv.reader(io.StringIO(text), strict=True)
    header = None
    rows = []
    while True:
        try:
            record = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            raise ParseError(_csv_problem(exc), reader.line_num) from None
        line = reader.line_num
        if not record or all(not cell.strip() for cell in record) or record[0].lstrip().startswith("#"):
            continue
        if header is None:
            header = [cell.strip().lower() for cell in record]
            unknown = [c for c in header if c not in CSV_COLUMNS]
            if unknown:
                raise ParseError(
                    f"unknown column(s) {', '.join(unknown)}; the header is {','.join(CSV_COLUMNS[:6])}", line
                )
            if "name" not in header:
                raise ParseError("the header needs a 'name' column", line)
            continue
        if len(record) > len(header):
            raise ParseError(f"{len(record)} values but the header has {len(header)} columns", line)
        values = dict(zip(header, (cell.strip() for cell in record), strict=False))
        row = {"line": line}
        for column in CSV_COLUMNS:
            if values.get(column):
                row[column] = values[column]
        row.setdefault("name", "")
        row.setdefault("address", row["name"])
        row["labels"] = [x for x in re.split(r"[;\s]+", values.get("labels", "")) if x]
        rows.append(row)
        if len(rows) > MAX_HOSTS:
            raise ParseError(f"more than {MAX_HOSTS} hosts", line)
    if header is None:
        raise ParseError(
            "the file is empty (expected a header: name,address,port,username,credential,labels)"
        )
    return rows


def _csv_problem(exc: csv.Error) -> str:
    if "new-line character" in str(exc):
        return "a line break (a bare CR) inside an unquoted field; quote the field or remove the CR"
    return f"not valid CSV: {exc}"


# ---------------------------------------------------------------------------------------------
# Ansible INI
# ---------------------------------------------------------------------------------------------

_SECTION = re.compile(r"^\[([^\]:\s]+)(?::(vars|children))?\]\s*$")
_RANGE = re.compile(r"\[([0-9]+):([0-9]+)(?::([0-9]+))?\]|\[([a-z]):([a-z])\]")


def expand_pattern(pattern: str) -> list[str]:
    """Ansible host ranges: hv[01:03] → hv01 hv02 hv03; web[a:c]; several ranges multiply."""
    match = _RANGE.search(pattern)
    if not match:
        return [pattern]
    head, tail = pattern[: match.start()], pattern[match.end() :]
    if match.group(1) is not None:
        start, end = match.group(1), match.group(2)
        step = int(match.group(3) or 1)
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        if int(end) < int(start) or step < 1:
            raise ValueError(f"bad range in {pattern!r}")
        values = [str(n).zfill(width) for n in range(int(start), int(end) + 1, step)]
    else:
        a, b = match.group(4), match.group(5)
        if b < a:
            raise ValueError(f"bad range in {pattern!r}")
        values = [chr(c) for c in range(ord(a), ord(b) + 1)]
    if len(values) > MAX_HOSTS:
        raise ValueError(f"range {pattern!r} is too large")
    return [name for value in values for name in expand_pattern(head + value + tail)]


def _split_vars(tokens: list[str], line: int) -> dict:
    result = {}
    for token in tokens:
        key, sep, value = token.partition("=")
        if not sep or not key:
            raise ParseError(f"expected key=value, got {token!r}", line)
        result[key.strip()] = value
    return result


class _Inventory:
    """Groups, their children and vars, and hosts with their own vars and first line."""

    def __init__(self):
        self.hosts: dict[str, dict] = {}  # name → {"line", "vars"}
        self.host_groups: dict[str, list[str]] = {}
        self.children: dict[str, list[str]] = {}
        self.group_vars: dict[str, dict] = {}

    def add_host(self, name, group, hvars, line):
        entry = self.hosts.setdefault(name, {"line": line, "vars": {}})
        entry["vars"].update(hvars)
        groups = self.host_groups.setdefault(name, [])
        if group and group not in groups:
            groups.append(group)
        if len(self.hosts) > MAX_HOSTS:
            raise ParseError(f"more than {MAX_HOSTS} hosts", line)

    def add_child(self, parent, child):
        kids = self.children.setdefault(parent, [])
        if child not in kids:
            kids.append(child)

    def _ancestry(self) -> dict[str, list[str]]:
        """group → its ancestors, nearest last (so parents' vars apply before children's)."""
        parents: dict[str, list[str]] = {}
        for parent, kids in self.children.items():
            for kid in kids:
                parents.setdefault(kid, []).append(parent)
        result = {}

        def walk(group, trail):
            if group in trail:
                raise ParseError(f"group {group!r} is its own ancestor ({' → '.join(trail + [group])})")
            order = []
            for parent in parents.get(group, []):
                for ancestor in walk(parent, trail + [group]) + [parent]:
                    if ancestor not in order:
                        order.append(ancestor)
            return order

        for group in set(parents) | set(self.children) | set(self.group_vars):
            result[group] = walk(group, [])
        return result

    def rows(self) -> list[dict]:
        ancestry = self._ancestry()
        rows = []
        for name, entry in self.hosts.items():
            direct = self.host_groups.get(name, [])
            groups: list[str] = []
            for group in direct:
                for g in ancestry.get(group, []) + [group]:
                    if g not in groups:
                        groups.append(g)
            hvars: dict = {}
            hvars.update(self.group_vars.get("all", {}))
            for group in groups:  # ancestors come before descendants
                hvars.update(self.group_vars.get(group, {}))
            hvars.update(entry["vars"])
            row = {"line": entry["line"], "name": name, "address": name}
            for var, target in HOST_VARS.items():
                if var in hvars and hvars[var] not in (None, ""):
                    row[target] = str(hvars[var])
            row["labels"] = [g for g in groups if g not in SKIP_GROUPS]
            rows.append(row)
        rows.sort(key=lambda r: r["line"])
        return rows


def parse_ini(text: str) -> list[dict]:
    inv = _Inventory()
    section, kind = "ungrouped", None
    for number, raw in enumerate(text.lstrip("\ufeff").splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            match = _SECTION.match(line)
            if not match:
                raise ParseError(f"not a section header: {line!r}", number)
            section, kind = match.group(1), match.group(2)
            if kind is None:
                inv.children.setdefault(section, [])
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as exc:
            raise ParseError(f"cannot split {line!r}: {exc}", number) from None
        if not tokens:
            continue
        if kind == "vars":
            key, sep, value = line.partition("=")
            if not sep:
                raise ParseError(f"expected key=value in [{section}:vars], got {line!r}", number)
            inv.group_vars.setdefault(section, {})[key.strip()] = value.strip().strip("'\"")
        elif kind == "children":
            inv.add_child(section, tokens[0])
        else:
            hvars = _split_vars(tokens[1:], number)
            try:
                names = expand_pattern(tokens[0])
            except ValueError as exc:
                raise ParseError(str(exc), number) from None
            for name in names:
                inv.add_host(name, None if section == "ungrouped" else section, hvars, number)
    return inv.rows()


# ---------------------------------------------------------------------------------------------
# Ansible YAML
# ---------------------------------------------------------------------------------------------


def _host_lines(node, lines: dict, in_hosts=False) -> None:
    """Map host names to their line by walking the composed YAML nodes under `hosts:` keys."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if in_hosts and isinstance(key, yaml.ScalarNode):
                lines.setdefault(key.value, key.start_mark.line + 1)
            _host_lines(
                value,
                lines,
                in_hosts=(not in_hosts and isinstance(key, yaml.ScalarNode) and key.value == "hosts"),
            )


def parse_yaml(text: str) -> list[dict]:
    try:
        data = yaml.safe_load(text)
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise ParseError(
            f"not valid YAML: {getattr(exc, 'problem', exc)}", mark.line + 1 if mark else None
        ) from None
    if data is None:
        raise ParseError("the file is empty")
    if not isinstance(data, dict):
        raise ParseError("an Ansible YAML inventory is a mapping of groups (all: ...)")
    lines: dict[str, int] = {}
    _host_lines(root, lines)
    inv = _Inventory()

    def group(name, body, path):
        if body is None:
            body = {}
        if not isinstance(body, dict):
            raise ParseError(f"group {'/'.join(path)} must be a mapping with hosts/children/vars", None)
        unknown = set(body) - {"hosts", "children", "vars"}
        if unknown:
            raise ParseError(
                f"group {'/'.join(path)} has unknown keys {', '.join(sorted(map(str, unknown)))} "
                f"(expected hosts, children, vars)"
            )
        if body.get("vars"):
            if not isinstance(body["vars"], dict):
                raise ParseError(f"vars of group {'/'.join(path)} must be a mapping")
            inv.group_vars.setdefault(name, {}).update(body["vars"])
        inv.children.setdefault(name, [])
        hosts = body.get("hosts") or {}
        if not isinstance(hosts, dict):
            raise ParseError(f"hosts of group {'/'.join(path)} must be a mapping of host names")
        for pattern, hvars in hosts.items():
            if hvars is not None and not isinstance(hvars, dict):
                raise ParseError(f"host {pattern} must map to its variables", lines.get(str(pattern)))
            try:
                names = expand_pattern(str(pattern))
            except ValueError as exc:
                raise ParseError(str(exc), lines.get(str(pattern))) from None
            for host in names:
                inv.add_host(
                    host, None if name in SKIP_GROUPS else name, hvars or {}, lines.get(str(pattern), 0)
                )
        children = body.get("children") or {}
        if not isinstance(children, dict):
            raise ParseError(f"children of group {'/'.join(path)} must be a mapping of groups")
        for child, child_body in children.items():
            inv.add_child(name, str(child))
            group(str(child), child_body, path + [str(child)])

    for name, body in data.items():
        group(str(name), body, [str(name)])
    return inv.rows()


# ---------------------------------------------------------------------------------------------
# Preview (for the upload page): parse + validate without writing
# ---------------------------------------------------------------------------------------------


class PreviewRow:
    """One parsed row, the errors import_hosts would report for it, and warnings (imported anyway)."""

    def __init__(self, row: dict, errors: list[str], *, default_credential=None, warnings=None):
        self.line = row.get("line")
        self.name = row.get("name", "")
        self.address = row.get("address", "")
        self.port = row.get("port", "")
        self.username = row.get("username", "")
        self.credential = row.get("credential", "")
        # The credential the host will get: its own, else the default chosen on the form.
        self.default_credential = "" if self.credential or default_credential is None else str(default_credential)
        self.labels = list(row.get("labels") or [])
        self.description = row.get("description", "")
        self.errors = errors
        self.warnings = warnings or []
        self.row = row


class Preview:
    def __init__(self, fmt: str, rows: list[PreviewRow], errors: list[str], report=None):
        self.format = fmt
        self.rows = rows
        self.errors = errors  # problems with the file itself (or not tied to a row)
        self.report = report

    @property
    def ok(self) -> bool:
        return bool(self.rows) and not self.errors and not any(row.errors for row in self.rows)

    @property
    def warning_count(self) -> int:
        return sum(len(row.warnings) for row in self.rows)


def load(text: str, fmt: str = "auto", filename: str = "") -> tuple[str, list[dict]]:
    """(format, rows); fmt "auto" guesses from the file name and content. Raises ParseError."""
    chosen = guess_format(filename, text) if fmt in ("", "auto", None) else fmt
    return chosen, parse(text, chosen)


def preview(
    text: str,
    fmt: str = "auto",
    user=None,
    default_credential=None,
    *,
    update_existing=False,
    filename: str = "",
) -> Preview:
    """Parse and validate exactly as services.import_hosts would, writing nothing.

    A file that cannot be parsed gives a Preview with `errors` (and no rows); row problems are in
    each row's `errors`. Then call services.import_hosts(preview.rows' dicts ...) — or commit().
    """
    from .services import import_hosts

    try:
        chosen, rows = load(text, fmt, filename)
    except ParseError as exc:
        return Preview(fmt, [], [str(exc)])
    report = import_hosts(rows, user, default_credential, update_existing=update_existing, dry_run=True)
    # Keyed by line and host name: one INI line (west-kvm[01:03]) is several hosts.
    by_row: dict = {}
    general = []
    for error in report.errors:
        if error.line is None:
            general.append(str(error))
        else:
            by_row.setdefault((error.line, error.host), []).append(str(error))
    credential = _credential_named(default_credential)
    warnings = endpoint_warnings(rows)
    preview_rows = []
    for number, row in enumerate(rows, start=1):
        key = (row.get("line") or number, str(row.get("name") or "").strip())
        preview_rows.append(PreviewRow(row, by_row.pop(key, []), default_credential=credential,
                                       warnings=warnings.get(number, [])))
    general.extend(msg for msgs in by_row.values() for msg in msgs)
    if not rows and not general:
        general.append("The file lists no hosts.")
    return Preview(chosen, preview_rows, general, report)


def _credential_named(value):
    """The default credential as given to preview() (an instance, a name or a pk) for display."""
    if value in (None, ""):
        return None
    from django.core.exceptions import ValidationError

    from .services import resolve_credential

    try:
        return resolve_credential(value)
    except ValidationError:
        return None


def _endpoint(row: dict) -> tuple[str, int | None]:
    try:
        port = int(row.get("port") or 22)
    except (TypeError, ValueError):
        port = None  # import_hosts reports the bad port
    return str(row.get("address") or "").strip().lower(), port


def endpoint_warnings(rows: list[dict]) -> dict[int, list[str]]:
    """{row number: [warning]} for rows whose address:port is already registered under another
    name, or used by an earlier row: the same SSH endpoint twice is almost always a copy-paste
    mistake, but a jump host or port forwarding can make it right, so it is not an error."""
    from .models import Hypervisor

    endpoints = [_endpoint(row) for row in rows]
    addresses = sorted({address for address, _port in endpoints if address})
    registered: dict[tuple[str, int], list[str]] = {}
    for start in range(0, len(addresses), 500):
        for name, address, port in Hypervisor.objects.filter(address__in=addresses[start:start + 500]).values_list(
            "name", "address", "port"
        ):
            registered.setdefault((address.lower(), port), []).append(name)
    warnings: dict[int, list[str]] = {}
    first_use: dict[tuple[str, int], tuple] = {}
    for number, (row, endpoint) in enumerate(zip(rows, endpoints, strict=True), start=1):
        if not endpoint[0] or endpoint[1] is None:
            continue
        name = str(row.get("name") or "").strip()
        shown = f"{endpoint[0]}:{endpoint[1]}"
        others = [n for n in registered.get(endpoint, []) if n != name]  # the same name is the row's own host
        if others:
            warnings.setdefault(number, []).append(
                f"{shown} is already registered as {', '.join(sorted(others))}: the same SSH endpoint twice"
            )
        if endpoint in first_use:
            line, other = first_use[endpoint]
            warnings.setdefault(number, []).append(f"{shown} is also used by line {line} ({other})")
        else:
            first_use[endpoint] = (row.get("line") or number, name)
    return warnings


def commit(
    text: str,
    fmt: str,
    user,
    default_credential=None,
    *,
    update_existing=False,
    filename: str = "",
    request=None,
):
    """Parse and import all or nothing. Returns the ImportReport; raises django ValidationError with
    every error message (nothing written) when the file or any row is invalid."""
    from django.core.exceptions import ValidationError

    from .services import import_hosts

    try:
        chosen, rows = load(text, fmt, filename)
    except ParseError as exc:
        raise ValidationError(str(exc)) from None
    if not rows:
        raise ValidationError("The file lists no hosts.")
    report = import_hosts(
        rows,
        user,
        default_credential,
        update_existing=update_existing,
        source=filename or chosen,
        request=request,
    )
    if report.errors:
        raise ValidationError([str(e) for e in report.errors])
    return report
