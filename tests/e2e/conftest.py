"""Browser end-to-end fixtures: Debian's /usr/bin/chromium driven by Playwright (never a browser
downloaded by `playwright install`), pytest-django's live_server, and a small simfleet fleet
registered with pinned host keys and discovered over real SSH.
"""

import os
from pathlib import Path

import pytest
from django.urls import reverse

from tests.conftest import PASSWORD, ensure_role_groups, register_sim_hosts, require_or_skip

# The worker (a subprocess started per test) reads these: a rebooted host is looked for every
# second, and a waiting host run retries quickly, so a journey with reboots takes seconds.
os.environ.setdefault("BOOT_POLL_SECONDS", "1")
os.environ.setdefault("BOOT_PROBE_TIMEOUT", "2")
os.environ.setdefault("HOSTRUN_WAIT_RETRY_SECONDS", "0.5")

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1400, "height": 900}
FLEET = ("e2e-a", "e2e-b")


class Browser:
    """One chromium process with its own fresh user-data dir: a separate browser per user.

    Console messages, page errors and failed requests are collected for every page."""

    def __init__(self, driver, profile: Path, base_url: str):
        self.base_url = base_url
        self.context = driver.chromium.launch_persistent_context(
            str(profile),
            executable_path=CHROMIUM,
            headless=True,
            args=CHROMIUM_ARGS,
            viewport=VIEWPORT,
            base_url=base_url,
            timezone_id="UTC",
        )
        self.context.set_default_timeout(15_000)
        self.console = []  # (type, text)
        self.page_errors = []
        self.bad_responses = []
        self.error_statuses = 0  # 4xx/5xx responses the page saw (each also logs a console error)
        self.downloads = []  # Chromium reports a navigation that became a download as aborted
        self.context.on("page", self._watch)
        for page in self.context.pages:
            self._watch(page)
        self.page = self.context.pages[0] if self.context.pages else self.context.new_page()

    def _watch(self, page):
        page.on("console", lambda msg: self.console.append((msg.type, msg.text)))
        page.on("pageerror", lambda exc: self.page_errors.append(str(exc)))
        page.on(
            "response",
            lambda r: self._bad_status(f"{r.status} {r.request.method} {r.url}") if r.status >= 400 else None,
        )
        page.on("requestfailed", self._failed_request)
        page.on("download", lambda d: self.downloads.append(d.url))

    def _failed_request(self, request):
        # ERR_ABORTED is the browser cancelling a request itself: a navigation away while a poll was
        # in flight, or htmx dropping a superseded one. Nobody sees it; every other failure counts.
        if request.failure != "net::ERR_ABORTED":
            self.bad_responses.append(f"{request.failure} {request.method} {request.url}")

    def _bad_status(self, line):
        self.bad_responses.append(line)
        self.error_statuses += 1

    def login(self, user):
        page = self.page
        page.goto(reverse("login"))
        page.fill("#id_username", user.get_username())
        page.fill("#id_password", PASSWORD)
        with page.expect_navigation():
            page.click("form button[type=submit]")
        assert "/login/" not in page.url, f"login of {user} failed: {page.inner_text('main')}"
        return page

    def problems(self, expected=(), expected_console=()):
        """Console errors/warnings, CSP violations, uncaught exceptions, failed requests and 4xx/5xx
        responses (the favicon too: every page must be clean, as a person's browser shows it).

        Chromium logs each 4xx/5xx response as "Failed to load resource" without its URL: those are
        judged by their response instead, where `expected` lists allowed "STATUS METHOD /path"
        prefixes (and `expected_console` substrings of console messages they cause)."""
        failed_load = "Failed to load resource: the server responded with a status of"
        found = [
            f"console {kind}: {text}"
            for kind, text in self.console
            if (kind in ("error", "warning") or "Content Security Policy" in text)
            and not text.startswith(failed_load)
            and not any(e in text for e in expected_console)
        ]
        # The browser's own requests (/favicon.ico) are not shown to the page, only their console
        # error: more such errors than error responses the page saw means one of those failed.
        unseen = sum(1 for _kind, text in self.console if text.startswith(failed_load)) - self.error_statuses
        if unseen > 0:
            found.append(f"{unseen} failed load(s) the page did not make (the browser's own /favicon.ico?)")
        responses = [
            r for r in self.bad_responses
            if not any(r.replace(self.base_url, "", 1).startswith(e) for e in expected)
            and r not in {f"net::ERR_ABORTED GET {url}" for url in self.downloads}
        ]
        return found + [f"page error: {e}" for e in self.page_errors] + responses

    def assert_clean(self, expected=(), expected_console=()):
        problems = self.problems(expected, expected_console)
        assert not problems, "the browser reported:\n" + "\n".join(problems)

    def close(self):
        self.context.close()


@pytest.fixture
def browser(transactional_db, live_server, tmp_path, monkeypatch):
    """browser() → a new Browser (own chromium process and profile) on the live server.

    The test database is set up before the (session-wide) live server, so the server and its
    connection are gone when the database is dropped at the end of the session.

    Playwright starts at the first call, after every other fixture is set up: its sync API runs an
    event loop in this thread, so asyncio.run() (discovery over asyncssh) no longer works here, and
    Django's async-safety check would take the test for async code — the ORM is allowed for the
    life of this test only."""
    require_or_skip(os.access(CHROMIUM, os.X_OK), f"{CHROMIUM} (Debian's chromium package) is not installed")
    sync_api = pytest.importorskip("playwright.sync_api", reason="pip install -e '.[dev]' (playwright)")
    state = {"manager": None, "driver": None, "opened": []}

    def open_browser():
        if state["driver"] is None:
            monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
            state["manager"] = sync_api.sync_playwright()
            state["driver"] = state["manager"].start()
        opened = state["opened"]
        b = Browser(state["driver"], tmp_path / f"chromium-profile-{len(opened)}", live_server.url)
        opened.append(b)
        return b

    yield open_browser
    for b in state["opened"]:
        b.close()
    if state["driver"] is not None:
        # The ORM calls made while Playwright ran got their own connection (Django keys connections
        # by context): close it here, or it outlives the test and blocks dropping the test database.
        from django.db import connections

        connections.close_all()
        state["driver"].stop()


def start_fleet(tmp_path_factory, names, **options):
    """A simfleet of DL360 Gen9 hosts (I350 eno49-52, 7 VFs each) over real SSH. A VF count takes
    a little while to appear (vf_delay), so a rollout is slow enough to be watched live."""
    from simfleet import SimFleet

    options.setdefault("vf_delay", 1.0)
    return SimFleet(
        tmp_path_factory.mktemp("simfleet-e2e"),
        hosts=[{"profile": "dl360g9", "name": name} for name in names],
        base_port=0,
        **options,
    ).start()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    sim = start_fleet(tmp_path_factory, FLEET)
    yield sim
    sim.stop()


@pytest.fixture
def discovered_hosts(transactional_db, fleet):
    """The module's fleet registered with pinned keys and discovered (eno49 at 0 of 7 VFs on each)."""
    ensure_role_groups()
    for sim in fleet.hosts:
        sim.clear_faults()
    return register_sim_hosts(fleet, sorted(fleet.hosts, key=lambda s: s.name), "simfleet-e2e")


@pytest.fixture
def screenshots(tmp_path):
    """shot(page, name) keeps a 1400×900 screenshot; they are copied to docs/screenshots only when
    SCREENSHOTS=1 and the test got to its end (`publish()`)."""
    target = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
    staged = tmp_path / "screenshots"
    staged.mkdir()

    class Shots:
        enabled = os.environ.get("SCREENSHOTS") == "1"

        def shot(self, page, name):
            if self.enabled:
                page.screenshot(path=str(staged / f"{name}.png"))

        def publish(self):
            if self.enabled:
                for png in sorted(staged.glob("*.png")):
                    (target / png.name).write_bytes(png.read_bytes())

    return Shots()


