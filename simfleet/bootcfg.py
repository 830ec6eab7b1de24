"""Boot configuration of the simulated hosts: the GRUB defaults as a shell would source them, the
generated configs (update-grub / grub2-mkconfig), grubby, and the command line a boot reads back.

This is simfleet's own implementation (independent of the agent's parser) so that an agent bug
in reading or writing /etc/default/grub shows up as a wrong /proc/cmdline after the reboot.
"""

from __future__ import annotations

import re
import shlex

ASSIGN_RE = re.compile(r"^[ \t]*(?:export[ \t]+)?([A-Za-z_][A-Za-z0-9_]*)=")
VAR_RE = re.compile(r"\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))")


class ShellError(Exception):
    """A syntax error the shell reports when grub-mkconfig sources the defaults."""


def _expand(text: str, env: dict[str, str]) -> str:
    return VAR_RE.sub(lambda m: env.get(m.group(1) or m.group(2), ""), text)


def _parse_value(
    text: str, pos: int, env: dict[str, str], distributor: str, path: str, lineno: int
) -> tuple[str, int]:
    """Parse one shell word starting at pos (may span lines inside quotes) -> (value, end pos)."""
    out = []
    n = len(text)
    i = pos
    while i < n:
        c = text[i]
        if c == "'":
            j = text.find("'", i + 1)
            if j < 0:
                raise ShellError(f"{path}: line {lineno}: unexpected EOF while looking for matching `''")
            out.append(text[i + 1 : j])
            i = j + 1
        elif c == '"':
            i += 1
            buf = []
            while True:
                if i >= n:
                    raise ShellError(f"{path}: line {lineno}: unexpected EOF while looking for matching `\"'")
                ch = text[i]
                if ch == '"':
                    i += 1
                    break
                if ch == "\\" and i + 1 < n and text[i + 1] in '"\\$`\n':
                    nxt = text[i + 1]
                    buf.append("" if nxt == "\n" else ("\x00" if nxt == "$" else nxt))
                    i += 2
                    continue
                if ch == "$" and text.startswith("$(", i):
                    j = text.find(")", i)
                    if j < 0:
                        raise ShellError(
                            f"{path}: line {lineno}: unexpected EOF while looking for matching `)'"
                        )
                    buf.append(distributor.replace("$", "\x00"))
                    i = j + 1
                    continue
                if ch == "`":
                    j = text.find("`", i + 1)
                    if j < 0:
                        raise ShellError(
                            f"{path}: line {lineno}: unexpected EOF while looking for matching ``'"
                        )
                    buf.append(distributor)
                    i = j + 1
                    continue
                buf.append(ch)
                i += 1
            out.append(_expand("".join(buf), env).replace("\x00", "$"))
        elif c == "`":
            j = text.find("`", i + 1)
            if j < 0:
                raise ShellError(f"{path}: line {lineno}: unexpected EOF while looking for matching ``'")
            out.append(distributor)
            i = j + 1
        elif text.startswith("$(", i):
            j = text.find(")", i)
            if j < 0:
                raise ShellError(f"{path}: line {lineno}: syntax error: unexpected end of file")
            out.append(distributor)
            i = j + 1
        elif c == "\\" and i + 1 < n:
            if text[i + 1] != "\n":
                out.append(text[i + 1])
            i += 2
        elif c in " \t\n;#|&":
            break
        else:
            j = i
            while j < n and text[j] not in " \t\n;#|&'\"`\\" and not text.startswith("$(", j):
                j += 1
            out.append(_expand(text[i:j], env))
            i = j
    return "".join(out), i


def source_defaults(files: list[tuple[str, str]], distributor: str) -> dict[str, str]:
    """Source the files in order like grub-mkconfig does; only assignments matter."""
    env: dict[str, str] = {}
    for path, text in files:
        i = 0
        n = len(text)
        while i < n:
            eol = text.find("\n", i)
            if eol < 0:
                eol = n
            lineno = text.count("\n", 0, i) + 1
            line = text[i:eol]
            match = ASSIGN_RE.match(line)
            stripped = line.strip()
            if match:
                value, end = _parse_value(text, i + match.end(), env, distributor, path, lineno)
                env[match.group(1)] = value
                nxt = text.find("\n", end)
                i = n if nxt < 0 else nxt + 1
                continue
            if stripped and not stripped.startswith("#"):
                # Any other shell line: only unbalanced quotes matter to us.
                if stripped.count('"') % 2 or stripped.count("'") % 2:
                    raise ShellError(
                        f"{path}: line {lineno}: unexpected EOF while looking for matching quote"
                    )
            i = eol + 1
    return env


def kernel_args(env: dict[str, str]) -> str:
    """The argument string 10_linux puts on the default entry's linux line."""
    return (
        "{} {}".format(env.get("GRUB_CMDLINE_LINUX", ""), env.get("GRUB_CMDLINE_LINUX_DEFAULT", ""))
    ).strip()


def render_grub_cfg(*, flavour: str, os_name: str, kernel: str, root_arg: str, args: str) -> str:
    linux_path = f"/vmlinuz-{kernel}" if flavour == "rhel-mkconfig" else f"/boot/vmlinuz-{kernel}"
    initrd = (f"/initramfs-{kernel}.img") if flavour == "rhel-mkconfig" else f"/boot/initrd.img-{kernel}"
    return (
        "#\n# DO NOT EDIT THIS FILE\n#\n"
        "# It is automatically generated by grub-mkconfig using templates\n"
        "# from /etc/grub.d and settings from /etc/default/grub\n#\n\n"
        "### BEGIN /etc/grub.d/10_linux ###\n"
        f"menuentry '{os_name}' --class gnu-linux --class gnu --class os $menuentry_id_option "
        "'gnulinux-simple' {\n"
        "\tload_video\n\tinsmod gzio\n\tinsmod part_gpt\n\tinsmod ext2\n"
        f"\techo\t'Loading Linux {kernel} ...'\n"
        f"\tlinux\t{linux_path} {root_arg} ro {args}\n"
        "\techo\t'Loading initial ramdisk ...'\n"
        f"\tinitrd\t{initrd}\n"
        "}\n"
        "### END /etc/grub.d/10_linux ###\n"
    )


def split_args(text: str) -> list[str]:
    try:
        return shlex.split(text)
    except ValueError:
        return text.split()


def cmdline_from_grub_cfg(text: str) -> str | None:
    """First menuentry's linux line -> 'BOOT_IMAGE=<path> <args>' (what GRUB hands the kernel)."""
    in_entry = False
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("menuentry "):
            in_entry = True
        elif in_entry and re.match(r"^linux(16|efi)?\s", stripped):
            words = split_args(stripped)
            if len(words) < 2:
                return None
            return " ".join(["BOOT_IMAGE=" + words[1]] + words[2:])
    return None


def render_bls_entry(*, os_title: str, kernel: str, options: str) -> str:
    return (
        f"title {os_title} ({kernel})\nversion {kernel}\nlinux /vmlinuz-{kernel}\n"
        f"initrd /initramfs-{kernel}.img $tuned_initrd\n"
        f"options {options}\ngrub_users $grub_users\ngrub_arg --unrestricted\ngrub_class rhel\n"
    )


def bls_options(text: str) -> tuple[str | None, str | None]:
    linux = options = None
    for line in text.splitlines():
        key, _, value = line.strip().partition(" ")
        if key == "linux":
            linux = value.strip()
        elif key == "options":
            options = value.strip()
    return linux, options


def render_grub_conf_legacy(*, title: str, kernel: str, args: str) -> str:
    return (
        "# grub.conf generated by anaconda\n#\n"
        "default=0\ntimeout=5\nsplashimage=(hd0,0)/grub/splash.xpm.gz\nhiddenmenu\n"
        f"title {title} ({kernel})\n\troot (hd0,0)\n\tkernel /vmlinuz-{kernel} {args}\n"
        f"\tinitrd /initramfs-{kernel}.img\n"
    )


def legacy_default_kernel_line(text: str) -> tuple[int | None, str | None]:
    """-> (line index, 'kernel ...' line) of the default title of a grub legacy grub.conf."""
    default = 0
    titles = -1
    for line in text.splitlines():
        m = re.match(r"^\s*default\s*=\s*(\d+)", line)
        if m:
            default = int(m.group(1))
    for index, line in enumerate(text.splitlines()):
        stripped = line.strip()
        if stripped.startswith("title"):
            titles += 1
        elif stripped.startswith("kernel") and titles == default:
            return index, stripped
    return None, None


def edit_args(current: str, add: list[str], remove: list[str]) -> str:
    """grubby semantics: --args replaces key=value of the same key or appends; --remove-args drops
    by key (no '=') or exact token."""
    tokens = split_args(current)
    for arg in remove:
        key = arg.split("=", 1)[0]
        tokens = [t for t in tokens if not (t == arg or ("=" not in arg and t.split("=", 1)[0] == key))]
    for arg in add:
        key = arg.split("=", 1)[0]
        replaced = False
        for index, token in enumerate(tokens):
            if token.split("=", 1)[0] == key:
                if not replaced:
                    tokens[index] = arg
                    replaced = True
        if not replaced:
            tokens.append(arg)
    return " ".join(tokens)
