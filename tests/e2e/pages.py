"""What a person sees and does on the console's pages, by role, label and visible text (not by
internal markup), so the journeys keep working while the pages' insides are rebuilt.

Each helper takes a Playwright page. Locators for the change pages are here and nowhere else:
if a change page's visible wording changes, this is the one file to adapt.
"""

import re

NO_FULL_LOAD = "window.__e2e_same_document"


# --------------------------------------------------------------------------------------------
# Any page
# --------------------------------------------------------------------------------------------

def mark_document(page):
    """A marker that only survives while no full page load happens (htmx swaps keep it)."""
    page.evaluate(f"{NO_FULL_LOAD} = true")


def same_document(page) -> bool:
    return page.evaluate(f"{NO_FULL_LOAD} === true")


def nav(page, name):
    """Follow a link of the top menu."""
    with page.expect_navigation():
        page.get_by_role("banner").get_by_role("link", name=name, exact=True).click()


def heading(page):
    return page.get_by_role("heading", level=1)


def section(page, title):
    """The card whose heading is `title` (e.g. "Discovery", "Plan preview", "Rollout")."""
    return page.locator("section").filter(has=page.get_by_role("heading", name=title, exact=True))


def table_with(page, column):
    """The table that has a column header named `column`."""
    return page.get_by_role("table").filter(has=page.get_by_role("columnheader", name=column, exact=True))


def row_of(table, text):
    return table.get_by_role("row").filter(has_text=text)


def buttons(page) -> list[str]:
    return [b.strip() for b in page.get_by_role("button").all_inner_texts()]


# --------------------------------------------------------------------------------------------
# Hosts
# --------------------------------------------------------------------------------------------

def host_rows(page):
    """The data rows of the hosts table (cells with a host link; the header row has sort links)."""
    return table_with(page, "Last discovery").get_by_role("row").filter(has=page.get_by_role("cell")).filter(
        has=page.get_by_role("link"))


def host_row(page, name):
    return table_with(page, "Last discovery").get_by_role("row").filter(
        has=page.get_by_role("link", name=name, exact=True))


def selection_count(page):
    return page.get_by_text(re.compile(r"(\d+ hosts? selected|No host selected)"))


# --------------------------------------------------------------------------------------------
# The change wizard and the change page
# --------------------------------------------------------------------------------------------

def wizard_preview(page):
    return section(page, "Plan preview")


def wizard_picked_hosts(page) -> list[str]:
    """The names of the hosts ticked in the wizard's picked list."""
    picked = page.locator("#picked-hosts li").filter(has=page.locator("input[name=hosts]:checked"))
    return [text.split()[0] for text in picked.all_inner_texts()]


def wizard_vf_row(page, n=1):
    """The n-th row of the "set the VF count" table (select by, value, VFs, persist, take over, MTU)."""
    table = page.get_by_role("table").filter(has=page.get_by_role("columnheader", name="Select PFs by"))
    return table.get_by_role("row").nth(n)


def wizard_set_vfs(page, pf, count, n=1):
    row = wizard_vf_row(page, n)
    row.get_by_role("textbox").fill(pf)
    spin = row.get_by_role("spinbutton", name=f"VFs ({n})", exact=True)
    spin.fill(str(count))
    spin.press("Tab")  # change event → the preview is re-planned


def wizard_describe(page, title, reason):
    page.get_by_label("Title").fill(title)
    page.get_by_label("Reason").fill(reason)


def save_draft(page):
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile(r"^Save")).click()


def submit_for_approval(page):
    with page.expect_navigation():
        page.get_by_role("button", name="Submit for approval").click()


def approve(page, comment):
    page.get_by_label(re.compile(r"^Comment")).fill(comment)
    with page.expect_navigation():
        page.get_by_role("button", name=re.compile(r"^Approve plan ")).click()


def rollout(page):
    return section(page, "Rollout")


def host_runs(page):
    """Rows of the rollout's host table."""
    return table_with(page, "Steps").get_by_role("row").filter(has=page.get_by_role("cell")).filter(
        has=page.get_by_role("link"))


def host_run(page, host):
    return host_runs(page).filter(has=page.get_by_role("link", name=host, exact=True))


def host_run_state(page, host):
    return host_run(page, host).get_by_role("cell").nth(2)
