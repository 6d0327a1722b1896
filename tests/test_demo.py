"""The demo bell in a real headless browser, against real `herald api` and `herald worker`.

The browser is Debian's chromium (`.ci/run` installs it); Playwright drives it and never
downloads one. On a machine without it the test is skipped, saying how to get it.
"""

import asyncio
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from typing import Any

import msgspec
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from tests.support.processes import herald, json_line, stop, wait_ready
from tests.support.sse import open_stream

CHROMIUM = os.environ.get("HERALD_CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")
pytestmark = pytest.mark.skipif(
    CHROMIUM is None,
    reason="no chromium: install Debian's (`sudo apt-get install chromium`) or set HERALD_CHROMIUM to its path",
)
# The flags a headless browser needs on a machine with no outside network (and as root).
FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip


def publish(env: dict[str, str], *, user: str, **event: str) -> None:
    """One event to `user` of tenant acme, through `herald publish -`."""
    body = {"tenant": "acme", "audience": {"users": [user]}, **event}
    done = herald("publish", "-", env=env, stdin=msgspec.json.encode(body))
    assert done.returncode == 0, done.stderr


@pytest.fixture
def env(env: dict[str, str]) -> dict[str, str]:
    # The demo on, and a one-second poll hint so the polling fallback shows within a test.
    return {**env, "HERALD_DEMO": "1", "HERALD_POLL_INTERVAL": "1"}


@pytest.fixture
async def browser() -> AsyncIterator[Browser]:
    async with async_playwright() as p:
        launched = await p.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        yield launched
        await launched.close()


async def test_the_bell_moves_live(env: dict[str, str], running: str, browser: Browser) -> None:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "erin", env=env))["token"]
    page: Page = await browser.new_page(viewport={"width": 1100, "height": 620})
    await page.goto(f"{running}/demo")
    await page.fill("#token", token)
    await page.click("#connect")
    badge = page.locator("#badge")
    await expect(page.locator("#state-text")).to_have_text("live", timeout=10_000)
    await expect(badge).to_have_text("0")

    # A test event goes through the stream and the worker, and arrives over the live stream.
    for n in (1, 2):
        await page.click("#publish")
        await expect(badge).to_have_text(str(n), timeout=5_000)
    await expect(page.locator("li.unread")).to_have_count(2)
    await expect(page.locator("#unseen")).to_have_text("2 new")

    # Opening the bell: seen, still unread.
    await page.click("#bell")
    await expect(page.locator("#unseen")).to_have_text("", timeout=5_000)
    await expect(badge).to_have_text("2")

    # Marking read moves the badge (pushed back by the stream, not only by the click).
    await page.locator("button.mark-read").first.click()
    await expect(badge).to_have_text("1", timeout=5_000)
    # A change made elsewhere (here: the CLI of another client) reaches the page too.
    publish(env, id="cli-1", type="t", user="erin", title="From the CLI", message="hello")
    await expect(badge).to_have_text("2", timeout=5_000)
    await expect(page.locator("#unseen")).to_have_text("1 new", timeout=5_000)
    await expect(page.locator("li .title").first).to_have_text("From the CLI")
    await page.click("#read-all")
    await expect(badge).to_have_text("0", timeout=5_000)


async def test_the_bell_falls_back_to_polling_when_the_stream_drops(
    env: dict[str, str], running: str, browser: Browser
) -> None:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "finn", env=env))["token"]
    page: Page = await browser.new_page()
    await page.route("**/v1/stream*", lambda route: route.abort())  # no stream gets through
    polls: list[str] = []
    page.on("request", lambda r: polls.append(r.headers.get("if-none-match", "")) if "unread-count" in r.url else None)
    await page.goto(f"{running}/demo?token={token}")
    await expect(page.locator("#state-text")).to_have_text("stream lost, polling", timeout=10_000)
    await page.click("#publish")
    await expect(page.locator("#badge")).to_have_text("1", timeout=8_000)
    assert any(polls[1:]), "later polls are conditional (If-None-Match)"
    await page.unroute("**/v1/stream*")
    await expect(page.locator("#state-text")).to_have_text("live", timeout=15_000)


async def test_snooze_and_mute_from_the_page(env: dict[str, str], running: str, browser: Browser) -> None:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "gwen", env=env))["token"]
    page: Page = await browser.new_page(viewport={"width": 1100, "height": 620})
    await page.goto(f"{running}/demo?token={token}")
    await expect(page.locator("#state-text")).to_have_text("live", timeout=10_000)
    badge, unread = page.locator("#badge"), page.locator("li.unread")
    await page.click("#publish")
    await expect(badge).to_have_text("1", timeout=5_000)
    await expect(page.locator("#counts")).to_have_text("1 unread · 1 new since you last opened the bell")

    # Snoozed for 5 seconds (the shortest choice): gone at once, then back, announced by the stream.
    await page.locator("button.snooze").first.click()
    await expect(unread).to_have_count(0)
    await expect(badge).to_have_text("0", timeout=5_000)
    await expect(unread).to_have_count(1, timeout=10_000)
    await expect(badge).to_have_text("1")
    await expect(page.locator("#unseen")).to_have_text("1 new")

    # Muting its type: a chip shows it, and the next one of that type is not delivered. An event of
    # another type published after it arrives, so by then the muted one has been handled.
    await page.locator("button.mute").first.click()
    await expect(page.locator(".chip")).to_have_text(["demo.ping×"])
    await page.click("#publish")
    publish(env, id="after-mute", type="other", user="gwen", message="m")
    await expect(badge).to_have_text("2", timeout=5_000)
    await expect(page.locator("li .meta").first).to_contain_text("other")
    # Unmuted from its chip: delivered again.
    await page.locator(".chip button.unmute").click()
    await expect(page.locator(".chip")).to_have_count(0)
    await page.click("#publish")
    await expect(badge).to_have_text("3", timeout=5_000)


def tab(page: Page, key: str) -> Locator:
    """The number on one of the bell's tabs (all, pings, reviews, archived)."""
    return page.locator(f'.tab[data-tab="{key}"] .n')


async def expect_tabs(page: Page, **numbers: int) -> None:
    for key, n in numbers.items():
        await expect(tab(page, key)).to_have_text(str(n), timeout=5_000)


async def live_page(env: dict[str, str], running: str, browser: Browser, user: str) -> Page:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", user, env=env))["token"]
    page: Page = await browser.new_page(viewport={"width": 1100, "height": 720})
    await page.goto(f"{running}/demo?token={token}")
    await expect(page.locator("#state-text")).to_have_text("live", timeout=10_000)
    return page


async def test_a_thread_is_one_item_saying_who_and_how_much(
    env: dict[str, str], running: str, browser: Browser
) -> None:
    page = await live_page(env, running, browser, "ivy")
    badge, items, archived = page.locator("#badge"), page.locator("#list li"), tab(page, "archived")
    actors, activity = page.locator("li .actors"), page.locator("li .activity")

    def comment(n: int, actor: str) -> None:
        title, message = "Pull request #7: comments", f"{actor} commented."
        publish(
            env, id=f"pr7-{n}", type="demo.review", user="ivy", title=title, message=message, group="pr:7", actor=actor
        )

    comment(1, "Bob")
    await expect(activity).to_have_text(["1 update"], timeout=5_000)
    await expect(actors).to_have_text(["Bob"])
    comment(2, "Alice")  # the newest actor first; one item, still one unread
    await expect(activity).to_have_text(["2 updates"], timeout=5_000)
    await expect(actors).to_have_text(["Alice and Bob"])
    await expect(items).to_have_count(1)
    await expect(badge).to_have_text("1")

    # Read, then a new comment: unread again, counted again.
    await page.locator("button.mark-read").click()
    await expect(badge).to_have_text("0", timeout=5_000)
    comment(3, "Carol")
    await expect(actors).to_have_text(["Carol and 2 others"], timeout=5_000)
    await expect(page.locator("li.unread .activity")).to_have_text(["3 updates"])
    await expect(badge).to_have_text("1", timeout=5_000)

    # Archived, then a new comment: back out of the archive, on top of the inbox.
    await page.locator("button.archive").click()
    await expect(page.locator("li.empty")).to_have_text("No notifications.")
    await expect(badge).to_have_text("0", timeout=5_000)
    await expect(archived).to_have_text("1", timeout=5_000)
    comment(4, "Dave")
    await expect(actors).to_have_text(["Dave and 3 others"], timeout=5_000)
    await expect(activity).to_have_text(["4 updates"])
    await expect(archived).to_have_text("0", timeout=5_000)
    await expect_tabs(page, all=1, pings=0, reviews=1)

    # The page's own thread button: comments by one of five reviewers on one more thread.
    await page.click("#publish-thread")
    await expect(activity).to_have_text(["1 update", "4 updates"], timeout=5_000)
    await page.click("#publish-thread")
    await expect(activity).to_have_text(["2 updates", "4 updates"], timeout=5_000)
    name = "(Alice|Bob|Carol|Dave|Erin)"
    await expect(actors.first).to_have_text(re.compile(f"^{name}( and {name})?$"))
    await expect_tabs(page, all=2, reviews=2, pings=0)
    await expect(badge).to_have_text("2")
    if os.environ.get("HERALD_DEMO_SCREENSHOT"):
        await page.click("#publish")
        await expect(badge).to_have_text("3", timeout=5_000)
        await page.screenshot(path=os.environ["HERALD_DEMO_SCREENSHOT"])


async def test_archive_and_the_tabs_counts(env: dict[str, str], running: str, browser: Browser) -> None:
    page = await live_page(env, running, browser, "jade")
    asked: list[Any] = []
    page.on("request", lambda r: asked.append(r.post_data_json) if r.url.endswith("/v1/counts") else None)
    badge, items = page.locator("#badge"), page.locator("#list li")
    for n in (1, 2):
        await page.click("#publish")
        await expect(badge).to_have_text(str(n), timeout=5_000)
    publish(env, id="review-1", type="demo.review", user="jade", title="A review", message="r")
    publish(env, id="other-1", type="other", user="jade", title="Something else", message="o")
    await expect(badge).to_have_text("4", timeout=5_000)
    await expect_tabs(page, all=4, pings=2, reviews=1, archived=0)

    # Read: off the unread numbers. Archived (one unread ping, then the read review): off every number.
    review, pings = items.filter(has_text="A review"), items.filter(has_text="demo.ping")
    await review.locator("button.mark-read").click()
    await expect_tabs(page, all=3, pings=2, reviews=0, archived=0)
    await pings.first.locator("button.archive").click()
    await expect(badge).to_have_text("2", timeout=5_000)
    await expect_tabs(page, all=2, pings=1, reviews=0, archived=1)
    await review.locator("button.archive").click()
    await expect_tabs(page, all=2, pings=1, reviews=0, archived=2)
    await expect(page.locator('.tab[data-tab="reviews"]')).to_have_attribute("title", "0 unread · 0 new · 0 in all")
    await expect(items).to_have_count(2)
    await expect(badge).to_have_text("2")

    # The Archived view: what was archived, each with Unarchive (and nothing else to do).
    await page.click('.tab[data-tab="archived"]')
    await expect(items.locator(".title")).to_have_text(["A review", "Test notification"])
    await expect(page.locator("li button.unarchive")).to_have_count(2)
    await expect(page.locator("li button.archive")).to_have_count(0)
    await items.filter(has_text="Test notification").locator("button.unarchive").click()
    await expect(items).to_have_count(1)
    await expect(badge).to_have_text("3", timeout=5_000)  # back unread, as it was
    await expect_tabs(page, all=3, pings=2, reviews=0, archived=1)

    # Each tab's list: the one type, or the whole inbox.
    await page.click('.tab[data-tab="pings"]')
    await expect(items).to_have_count(2)
    await expect(items.locator(".meta")).to_contain_text(["demo.ping", "demo.ping"])
    await page.click('.tab[data-tab="all"]')
    await expect(items).to_have_count(3)
    # Every refresh counted all four tabs in one request.
    assert asked, "the tabs were never counted"
    assert all(set(body["tabs"]) == {"all", "pings", "reviews", "archived"} for body in asked), asked


async def test_the_bell_polls_while_its_stream_is_refused_and_gets_it_once_there_is_room(
    env: dict[str, str], browser: Browser
) -> None:
    token = json_line(herald("admin", "create-user", "--tenant", "acme", "--user", "hal", env=env))["token"]
    base = f"http://127.0.0.1:{env['HERALD_PORT']}"
    # One stream per process, and another tab of the same user already holds it.
    api = subprocess.Popen([sys.executable, "-m", "service.cli", "api"], env={**env, "HERALD_STREAM_LIMIT": "1"})
    try:
        wait_ready(base, [api])
        async with open_stream(base, {"X-API-Key": token}) as other_tab:
            await other_tab.next_event()
            page: Page = await browser.new_page()
            refused: list[int] = []
            page.on("response", lambda r: refused.append(r.status) if "/v1/stream" in r.url else None)
            await page.goto(f"{base}/demo?token={token}")
            await expect(page.locator("#state-text")).to_have_text("stream lost, polling", timeout=10_000)
            await expect(page.locator("#badge")).to_have_text("0", timeout=5_000)
            # Asked for again after each poll interval (1 s here), refused each time while it is full.
            deadline = time.monotonic() + 10
            while refused.count(503) < 2:
                assert time.monotonic() < deadline, f"the stream was not asked for again: {refused}"
                await asyncio.sleep(0.1)
        await expect(page.locator("#state-text")).to_have_text("live", timeout=10_000)
    finally:
        stop([api])
