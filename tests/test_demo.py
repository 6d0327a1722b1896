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

import httpx
import msgspec
import pytest
from playwright.async_api import Browser, Locator, Page, async_playwright, expect

from service.http.demo import REVIEW_ACTIONS
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


def publish(env: dict[str, str], *, user: str, **event: Any) -> None:
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
        # As the page's own thread button does: a comment on a review, asking for an answer.
        title, message, ask = "Pull request #7: comments", f"{actor} commented.", msgspec.to_builtins(REVIEW_ACTIONS)
        publish(
            env,
            id=f"pr7-{n}",
            type="demo.review",
            user="ivy",
            title=title,
            message=message,
            group="pr:7",
            actor=actor,
            actions=ask,
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
        # The picture in docs/api.md: a new ping, a thread asking for an answer, and one answered.
        await page.click("#publish")
        await expect(badge).to_have_text("3", timeout=5_000)
        await items.filter(has_text="Pull request #7").locator('button.act[data-action="approve"]').click()
        await expect(page.locator("li .interaction")).to_have_text(["✓ Approved"], timeout=5_000)
        await expect(badge).to_have_text("2", timeout=5_000)
        await expect_tabs(page, all=2, pings=1, reviews=1, archived=0)
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


async def served(running: str, page: Page, item: Locator) -> dict[str, Any]:
    """The server's own scalebox item for a row of the page, asked with the page's token."""
    token, row_id = await page.input_value("#token"), await item.get_attribute("data-id")
    async with httpx.AsyncClient(base_url=running) as client:
        reply = await client.get(f"/v1/notifications/{row_id}", headers={"Authorization": f"Bearer {token}"})
    assert reply.status_code == 200, reply.text
    data: dict[str, Any] = reply.json()["data"]
    return data


async def test_an_items_actions_are_buttons_and_the_answer_shows(
    env: dict[str, str], running: str, browser: Browser
) -> None:
    page = await live_page(env, running, browser, "kai")
    badge, items = page.locator("#badge"), page.locator("#list li")
    await page.click("#publish-thread")
    await expect(badge).to_have_text("1", timeout=5_000)
    await page.click("#publish")
    await expect(badge).to_have_text("2", timeout=5_000)
    review, ping = items.filter(has_text="Pull request #42"), items.filter(has_text="Test notification")
    # The review's comment asks for an answer; the ping asks nothing.
    await expect(review.locator("button.act")).to_have_text(["Approve", "Request changes"])
    await expect(ping.locator("button.act")).to_have_count(0)

    # A click records it: the item, read, says what was taken instead of offering the buttons.
    await review.locator('button.act[data-action="approve"]').click()
    await expect(review.locator(".interaction")).to_have_text("✓ Approved", timeout=5_000)
    await expect(review.locator("button.act")).to_have_count(0)
    await expect(review).to_have_class("read")
    await expect(badge).to_have_text("1", timeout=5_000)  # pushed by the stream
    await expect_tabs(page, all=1, reviews=0, pings=1)
    answered = await served(running, page, review)
    assert answered["interaction"] == "approve", answered
    assert answered["is_read"] is True
    assert answered["interacted_at"] is not None

    # The title records `open` on any item, one without actions included.
    await ping.locator(".title").click()
    await expect(ping.locator(".interaction")).to_have_text("✓ Opened", timeout=5_000)
    await expect(badge).to_have_text("0", timeout=5_000)
    assert (await served(running, page, ping))["interaction"] == "open"

    # A new comment is a new question: the answer is cleared, and the buttons are back.
    await page.click("#publish-thread")
    await expect(badge).to_have_text("1", timeout=5_000)
    await expect(review.locator(".activity")).to_have_text("2 updates")
    await expect(review.locator(".interaction")).to_have_count(0)
    await expect(review.locator("button.act")).to_have_text(["Approve", "Request changes"])
    assert (await served(running, page, review))["interaction"] is None
    await review.locator('button.act[data-action="request-changes"]').click()
    await expect(review.locator(".interaction")).to_have_text("✓ Changes requested", timeout=5_000)
    await expect(badge).to_have_text("0", timeout=5_000)
    assert (await served(running, page, review))["interaction"] == "request-changes"
    await expect(page.locator("#error")).to_have_text("")

    # Put away unanswered: the Archived tab offers no buttons, but what is done there still shows.
    await page.click("#publish-thread")
    await expect(review.locator("button.act")).to_have_count(2, timeout=5_000)
    await review.locator("button.archive").click()
    await expect(review).to_have_count(0, timeout=5_000)
    await page.click('.tab[data-tab="archived"]')
    await expect(items.locator(".title")).to_have_text(["Pull request #42: comments"])
    await expect(items.locator("button.act")).to_have_count(0)
    await items.locator(".title").click()
    await expect(items.locator(".interaction")).to_have_text(["✓ Opened"], timeout=5_000)
    await expect(items.locator("button.unarchive")).to_have_count(1)  # still archived
    opened = await served(running, page, items)
    assert opened["interaction"] == "open", opened
    assert opened["archived_at"] is not None


async def test_an_actions_url_opens_in_a_new_tab_only_when_it_is_a_web_address(
    env: dict[str, str], running: str, browser: Browser
) -> None:
    page = await live_page(env, running, browser, "lou")
    items, badge = page.locator("#list li"), page.locator("#badge")
    # A producer's action may name any URL up to 2,000 characters: the page must not run a script.
    script = "javascript:document.title='taken over'"
    actions = [{"id": "check", "label": "Check it", "url": "/healthz"}, {"id": "run", "label": "Run", "url": script}]
    publish(env, id="links-1", type="t", user="lou", title="Links", message="m", actions=actions)
    await expect(badge).to_have_text("1", timeout=5_000)

    await items.locator('button.act[data-action="run"]').click()
    await expect(items.locator(".interaction")).to_have_text("✓ Run", timeout=5_000)  # recorded, not followed
    await expect(badge).to_have_text("0", timeout=5_000)

    publish(env, id="links-2", type="t", user="lou", title="More links", message="m", actions=actions)
    await expect(badge).to_have_text("1", timeout=5_000)
    async with page.expect_popup() as opened:
        await items.first.locator('button.act[data-action="check"]').click()
    new_tab = await opened.value
    await new_tab.wait_for_load_state()
    assert new_tab.url == f"{running}/healthz"
    await expect(items.first.locator(".interaction")).to_have_text("✓ Check it")
    # The script's tab, had it been opened, would have come before this one.
    assert len(page.context.pages) == 2
    assert await page.title() == "Herald — demo bell"
