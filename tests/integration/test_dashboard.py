"""The dashboard, in a real browser: headless Chromium driven by Selenium.

``make test`` installs Debian's ``chromium`` and ``chromium-driver`` where it
can (root with apt); elsewhere the browser test is skipped with the reason.
The access rules are checked over plain HTTP too. The screenshot goes to
the test artefacts (``test-artifacts/``); with ``UPDATE_DOCS_SCREENSHOT=1`` it
also replaces ``docs/dashboard.png`` (a test run must not dirty the checkout).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import requests

from devtools.devstack import ROOT
from queues import is_redis_broker
from service.config import DEV_API_TOKEN
from tests.integration.conftest import new_user
from tests.integration.test_operations import parked_of, wait_until

ARTIFACTS = ROOT / "test-artifacts"
AUTH = {"Authorization": f"Bearer {DEV_API_TOKEN}"}


def browser_binaries() -> tuple[str, str] | None:
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    driver = shutil.which("chromedriver")
    return (chromium, driver) if chromium and driver else None


@pytest.fixture
def browser():
    binaries = browser_binaries()
    if binaries is None:
        pytest.skip(
            "no chromium + chromedriver on this machine (make test installs Debian's "
            "chromium and chromium-driver where it runs as root with apt)"
        )
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (requirements-dev.txt)")
    options = webdriver.ChromeOptions()
    options.binary_location = binaries[0]
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--disable-gpu",
        "--window-size=1400,1300",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(options=options, service=Service(executable_path=binaries[1]))
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()


def test_the_dashboard_needs_a_token_and_never_puts_it_in_the_cookie(ops_stack):
    page = f"{ops_stack.web}/dashboard"
    refused = requests.get(page, timeout=10)
    assert refused.status_code == 401 and "<form" in refused.text
    assert requests.get(page + "/state.json", timeout=10).status_code == 401
    assert (
        requests.get(page, headers={"Authorization": "Bearer wrong"}, timeout=10).status_code == 401
    )
    # queue depths are read from a Redis broker's lists; on RabbitMQ the dashboard says
    # they are not known (its management UI has them)
    on_redis = is_redis_broker(ops_stack.dev.base_env["CELERY_BROKER_URL"])
    state = requests.get(page + "/state.json", headers=AUTH, timeout=10).json()
    assert state["queues_known"] is on_redis
    bad = requests.post(page + "/login", data={"token": "wrong"}, timeout=10)
    assert bad.status_code == 401 and "not valid" in bad.text
    good = requests.post(
        page + "/login", data={"token": DEV_API_TOKEN}, timeout=10, allow_redirects=False
    )
    assert good.status_code == 303
    cookie = good.headers["Set-Cookie"]
    for attribute in ("Secure", "HttpOnly", "SameSite=Strict", "Path=/dashboard"):
        assert attribute in cookie
    assert DEV_API_TOKEN not in cookie and DEV_API_TOKEN not in good.headers["Location"]
    cookies = {"netsync_dashboard": good.cookies["netsync_dashboard"]}
    assert requests.get(page + "/state.json", timeout=10, cookies=cookies).status_code == 200
    # a form post with the cookie but without the page's form token changes nothing
    forged = requests.post(
        page + "/providers/github/pause", cookies=cookies, timeout=10, allow_redirects=False
    )
    assert forged.status_code == 403
    assert not requests.get(page + "/state.json", headers=AUTH, timeout=10).json()["paused"]


def _text(driver, css: str) -> str:
    """The element's text; the script swaps the panel each second, so an element
    found may be gone by the time it is read: then look again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    for _ in range(5):
        try:
            found = driver.find_elements(By.CSS_SELECTOR, css)
            return found[0].text if found else ""
        except StaleElementReferenceException:
            continue
    return ""


def click(driver, css: str) -> None:
    """Click a button of the panel; the refresh may swap it away mid-click: find it again."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.common.by import By

    def clicked():
        try:
            driver.find_element(By.CSS_SELECTOR, css).click()
            return True
        except StaleElementReferenceException:
            return False

    wait_until(clicked, what=f"clicking {css}")
    wait_until(lambda: driver.find_elements(By.ID, "in-flight"), what="the page after the click")


def test_dashboard_in_a_browser_shows_progress_moving_and_a_failure(ops_stack, browser):
    from selenium.webdriver.common.by import By

    # A sync slow enough to watch: 30,000 followers (a whale) at 400 ms a call.
    slow = ops_stack.add_account("github", 30_000)
    ops_stack.add_faults(
        {"kind": "latency", "provider": "github", "token": slow["token"], "mean": 400, "jitter": 20}
    )
    slow_sync = ops_stack.login(new_user(), slow).json()["syncs"][0]["sync_id"]
    held_sync = None
    try:
        browser.get(f"{ops_stack.web}/dashboard")
        browser.find_element(By.ID, "token").send_keys(DEV_API_TOKEN)
        browser.find_element(By.CSS_SELECTOR, "form.login button").click()
        wait_until(lambda: browser.find_elements(By.ID, "in-flight"), what="dashboard rendered")
        assert DEV_API_TOKEN not in browser.current_url
        # Pause LinkedIn from the page: a sync started now waits, and says why.
        click(browser, '[data-switch="linkedin"]')
        wait_until(lambda: "linkedin" in _text(browser, "#paused"), what="paused banner")
        ops_stack.pause_reached_workers()
        held_sync = ops_stack.login(new_user(), ops_stack.add_account("linkedin", 200)).json()[
            "syncs"
        ][0]["sync_id"]

        row = f'#in-flight tr[data-sync-id="{slow_sync}"] [data-field="connections"]'
        first = wait_until(lambda: _text(browser, row), what="the slow sync's row")
        wait_until(
            lambda: _text(browser, row) not in ("", first),
            timeout=30,
            what="its progress moving on the page (refreshed by the script)",
        )

        # A failure: every call of this account answers 503 until the retries run out.
        broken = ops_stack.add_account("github", 10)
        ops_stack.add_faults({"kind": "outage", "provider": "github", "token": broken["token"]})
        failed_sync = ops_stack.login(new_user(), broken).json()["syncs"][0]["sync_id"]
        kind = f'#failures tr[data-sync-id="{failed_sync}"] [data-field="error-kind"]'
        assert wait_until(lambda: _text(browser, kind), timeout=60, what="the failure on the page")
        assert ops_stack.sync(failed_sync)["error"]["kind"] in _text(browser, kind)
        wait_until(lambda: parked_of(ops_stack, held_sync), what="parked linkedin call")
        wait_until(lambda: "provider_paused" in _text(browser, "#parked"), what="parked panel")
        assert _text(browser, row), "the slow sync is still in flight for the screenshot"

        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "dashboard.png"))
        if os.environ.get("UPDATE_DOCS_SCREENSHOT") == "1":
            shutil.copyfile(ARTIFACTS / "dashboard.png", ROOT / "docs" / "dashboard.png")
        assert Path(ARTIFACTS / "dashboard.png").stat().st_size > 10_000

        # Act from the page: cancel the slow sync, resume LinkedIn.
        click(browser, f'[data-cancel="{slow_sync}"]')
        wait_until(lambda: ops_stack.sync(slow_sync)["status"] == "cancelled", what="cancelled")
        click(browser, '[data-switch="linkedin"]')
        assert ops_stack.wait_final(held_sync, timeout=60)["status"] == "succeeded"
    finally:
        ops_stack.resume("linkedin")
        for sync_id in (slow_sync, held_sync):
            if sync_id:
                ops_stack.http.post(f"{ops_stack.web}/v1/syncs/{sync_id}/cancel", timeout=10)
