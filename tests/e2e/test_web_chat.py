"""The web chat page in a real browser (headless Chromium) against the real platform.

The page is the built ``web/dist`` (``npm ci && npm run build`` in ``web/``), served by
``hubbub up`` at ``/``. Two browser contexts are two people with separate storage. No sleeps:
every wait is Playwright's auto-waiting ``expect``.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Route, expect, sync_playwright

from tests.support.platform import REPO_ROOT, Platform, start_platform

WEB_DIST = REPO_ROOT / "web" / "dist"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse 1"
LIVE_MS = 15_000  # ms: a live event, a reconnect
PRESENCE_MS = 30_000  # ms: a closed browser seen offline (socket close + the grace period)


@pytest.fixture(scope="module")
def web_platform(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Platform]:
    """``hubbub up`` serving the built page at ``/``."""
    if not (WEB_DIST / "index.html").is_file():
        pytest.fail(
            f"{WEB_DIST / 'index.html'} is missing: build the page with `npm ci && npm run build` in web/"
        )
    running = start_platform(
        tmp_path_factory.mktemp("web-platform"), extra_env={"HUBBUB_WEB_DIR": str(WEB_DIST)}
    )
    yield running
    assert running.stop() == 0, running.process.log()


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium")
    expect.set_options(timeout=LIVE_MS)
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
        )
        yield launched
        launched.close()


class People:
    """Browser contexts (one person each) opened by a test, closed after it."""

    def __init__(self, browser: Browser, platform: Platform) -> None:
        self.browser = browser
        self.url = platform.http_url
        self.contexts: list[BrowserContext] = []
        self.errors: list[str] = []

    def open(self) -> Page:
        context = self.browser.new_context(viewport={"width": 1100, "height": 720}, base_url=self.url)
        context.set_default_timeout(LIVE_MS)
        self.contexts.append(context)
        page = context.new_page()
        page.on("pageerror", lambda error: self.errors.append(str(error)))
        page.on(
            "console",
            lambda message: (
                self.errors.append(message.text)
                if message.type == "error" and "Content Security Policy" in message.text
                else None
            ),
        )
        page.goto("/")
        return page

    def sign_up(self, prefix: str, page: Page | None = None) -> tuple[Page, str]:
        """A new person signed up through the page (``page``, or a new one); their page and username."""
        page = page or self.open()
        username = f"{prefix}_{uuid.uuid4().hex[:8]}"
        page.locator("#signup-username").fill(username)
        page.get_by_label("Display name").fill(prefix.capitalize())
        page.locator("#signup-password").fill(PASSWORD)
        page.get_by_role("button", name="Sign up").click()
        expect(page.locator("#me-name")).to_have_text(prefix.capitalize())
        expect(page.locator("#connection")).to_have_attribute("data-state", "online")
        return page, username

    def close(self) -> None:
        for context in self.contexts:
            context.close()


@pytest.fixture
def people(browser: Browser, web_platform: Platform) -> Iterator[People]:
    opened = People(browser, web_platform)
    yield opened
    opened.close()
    assert not opened.errors, opened.errors


def start_direct(page: Page, username: str) -> None:
    page.get_by_text("New chat").click()
    page.locator("#direct-username").fill(username)
    page.get_by_role("button", name="Start").click()
    expect(page.locator("#conv")).to_be_visible()


def open_conversation(page: Page, title: str) -> None:
    page.locator("#conversations a", has_text=title).click()
    expect(page.locator("#conv-title")).to_contain_text(title)


def send(page: Page, text: str) -> None:
    box = page.get_by_label("Message", exact=True)
    box.fill(text)
    box.press("Enter")


def message(page: Page, text: str) -> Locator:
    return page.locator("#message-list li .text", has_text=text)


def test_two_people_chat_both_ways_live(people: People, tmp_path: Path) -> None:
    alice, _ = people.sign_up("alice")
    bob, bob_name = people.sign_up("bob")

    start_direct(alice, bob_name)
    expect(alice.locator("#conv-title")).to_contain_text("Bob")
    send(alice, "hi bob 👋")
    mine = alice.locator("#message-list li.mine", has_text="hi bob 👋")
    expect(mine).to_have_attribute("data-state", "sent")
    expect(mine).to_have_attribute("data-seq", "1")
    expect(alice.get_by_label("Message", exact=True)).to_have_value("")

    # Bob sees the new conversation live, with its unread count and last message.
    item = bob.locator("#conversations a", has_text="Alice")
    expect(item.locator(".unread")).to_have_text("1")
    expect(item.locator(".preview")).to_have_text("hi bob 👋")
    open_conversation(bob, "Alice")
    expect(bob.locator("#message-list li.theirs .text")).to_have_text(["hi bob 👋"])
    expect(item.locator(".unread")).to_have_count(0)

    # Shift+Enter is a new line; Enter sends.
    box = bob.get_by_label("Message", exact=True)
    box.fill("hello alice")
    box.press("Shift+Enter")
    box.press_sequentially("second line")
    box.press("Enter")
    expect(bob.locator("#message-list li.mine")).to_have_attribute("data-state", "sent")
    reply = alice.locator("#message-list li.theirs .text")
    expect(reply).to_have_text(["hello alice\nsecond line"])
    expect(alice.locator("#message-list li")).to_have_count(2)
    alice.screenshot(path=tmp_path / "web-chat.png", full_page=True)
    assert (tmp_path / "web-chat.png").stat().st_size > 0


def test_a_message_sent_offline_is_pending_then_resent_and_missed_ones_caught_up(people: People) -> None:
    alice, _ = people.sign_up("alice")
    bob, bob_name = people.sign_up("bob")
    start_direct(alice, bob_name)
    send(alice, "first")
    open_conversation(bob, "Alice")
    expect(message(bob, "first")).to_be_visible()

    bob.context.set_offline(True)
    expect(bob.locator("#connection")).to_have_attribute("data-state", "offline")
    send(bob, "written in a tunnel")
    pending = bob.locator("#message-list li.mine", has_text="written in a tunnel")
    expect(pending).to_have_attribute("data-state", "pending")
    send(alice, "while you were away")
    expect(alice.locator("#message-list li.mine", has_text="while you were away")).to_have_attribute(
        "data-state", "sent"
    )

    bob.context.set_offline(False)
    expect(bob.locator("#connection")).to_have_attribute("data-state", "online")
    expect(pending).to_have_attribute("data-state", "sent")
    expect(message(alice, "written in a tunnel")).to_be_visible()
    # Caught up through /v1/sync, in seq order, each message once.
    expect(bob.locator("#message-list li .text")).to_have_text(
        ["first", "while you were away", "written in a tunnel"]
    )


def test_a_login_naming_dead_broker_nodes_connects_through_a_live_one(people: People) -> None:
    """The page walks the login's ``brokers`` past nodes that refuse, then asks ``GET /v1/brokers``."""
    with socket.socket() as first, socket.socket() as second:
        # Bound, never listening: a node that refuses every connection, its port held meanwhile.
        dead = []
        for sock in (first, second):
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            dead.append({"host": "127.0.0.1", "port": port, "ws_url": f"ws://127.0.0.1:{port}/mqtt"})

        def name_dead_nodes(route: Route) -> None:
            response = route.fetch()
            body = response.json()
            body["mqtt"], body["brokers"] = dead[0], dead
            route.fulfill(status=response.status, json=body)

        page = people.open()
        page.route("**/v1/auth/token", name_dead_nodes)
        with page.expect_request("**/v1/brokers") as asked:
            people.sign_up("carol", page)
        assert asked.value.method == "GET"
        expect(page.locator("#connection")).to_have_attribute("data-state", "online")


def test_a_reload_keeps_device_history_and_long_messages_whole(people: People) -> None:
    alice, _ = people.sign_up("alice")
    bob, bob_name = people.sign_up("bob")
    start_direct(alice, bob_name)
    long_text = "".join(f"{i:05d} lorem ipsum dolor " for i in range(1000))[:20_000]
    emoji = "family 👨‍👩‍👧‍👦, flags 🇺🇦🇯🇵, skin tones 👍🏽, music 𝄞, CJK 你好"
    send(alice, long_text)
    send(alice, emoji)
    expect(alice.locator("#message-list li.mine[data-state='sent']")).to_have_count(2)

    device = alice.evaluate("JSON.parse(localStorage.getItem('hubbub.session')).device_id")
    alice.reload()
    expect(alice.locator("#connection")).to_have_attribute("data-state", "online")
    expect(alice.locator("#message-list li.mine[data-state='sent']")).to_have_count(2)
    assert alice.evaluate("JSON.parse(localStorage.getItem('hubbub.session')).device_id") == device

    open_conversation(bob, "Alice")
    texts = bob.locator("#message-list li .text")
    expect(texts).to_have_count(2)
    assert texts.evaluate_all("nodes => nodes.map(node => node.textContent)") == [long_text, emoji]
    assert alice.locator("#message-list li .text").evaluate_all(
        "nodes => nodes.map(node => node.textContent)"
    ) == [long_text, emoji]
    # Markup in a message is text, never HTML.
    send(bob, "<img src=x onerror=alert(1)><b>bold?</b>")
    expect(message(alice, "<b>bold?</b>")).to_be_visible()
    expect(alice.locator("#message-list img, #message-list b")).to_have_count(0)


def test_history_loads_as_you_scroll_up(people: People, web_platform: Platform) -> None:
    alice, alice_name = people.sign_up("alice")
    bob_name = f"bob_{uuid.uuid4().hex[:8]}"
    with httpx.Client(base_url=web_platform.http_url, timeout=30) as http:
        assert http.post("/v1/users", json={"username": bob_name, "password": PASSWORD}).status_code == 201
        # Two devices of Bob's, so that 120 sends stay within one device's burst allowance.
        devices = [
            {
                "Authorization": "Bearer "
                + http.post("/v1/auth/token", json={"username": bob_name, "password": PASSWORD}).json()[
                    "access_token"
                ]
            }
            for _ in range(2)
        ]
        alice_id = http.get("/v1/users", params={"username": alice_name}, headers=devices[0]).json()[0]["id"]
        conversation = http.post(
            "/v1/conversations", json={"type": "direct", "user_id": alice_id}, headers=devices[0]
        ).json()
        for number in range(1, 121):
            response = http.post(
                f"/v1/conversations/{conversation['id']}/messages",
                json={"cmid": f"m{number}", "text": f"message {number}"},
                headers=devices[number % 2],
            )
            assert response.status_code == 201, response.text

    item = alice.locator("#conversations a", has_text="bob")
    expect(item.locator(".unread")).to_have_attribute("aria-label", "120 unread")
    expect(item.locator(".unread")).to_have_text("99+")
    open_conversation(alice, bob_name)
    expect(alice.locator("#message-list li[data-seq='120']")).to_be_in_viewport()
    messages = alice.locator("#message-list li")
    expect(messages).to_have_count(50)
    for held in (100, 120):
        alice.locator("#messages").evaluate("box => box.scrollTo(0, 0)")
        expect(messages).to_have_count(held)
    assert alice.locator("#message-list li .text").first.text_content() == "message 1"
    expect(alice.locator("#history-status")).to_have_text("The beginning of the conversation")


def test_groups_and_members(people: People) -> None:
    alice, _ = people.sign_up("alice")
    bob, bob_name = people.sign_up("bob")
    carol, carol_name = people.sign_up("carol")

    alice.get_by_text("New group").click()
    alice.get_by_label("Group name").fill("Weekend plans")
    alice.get_by_label("Members", exact=True).fill(bob_name)
    alice.get_by_role("button", name="Create group").click()
    expect(alice.locator("#conv-title")).to_have_text("Weekend plans")
    send(alice, "who is in?")
    open_conversation(bob, "Weekend plans")
    expect(message(bob, "who is in?")).to_be_visible()

    alice.locator("#group-tools summary").click()
    alice.get_by_label("Add a member by username").fill(carol_name)
    alice.get_by_role("button", name="Add", exact=True).click()
    expect(alice.locator("#member-list li")).to_have_count(3)
    open_conversation(carol, "Weekend plans")
    expect(message(carol, "who is in?")).to_be_visible()
    send(carol, "me!")
    expect(bob.locator("#message-list li.theirs", has_text="me!").locator(".sender")).to_have_text("Carol")
    expect(alice.locator("#member-list li .dot[data-status='online']")).to_have_count(2)


def test_typing_shows_to_the_other_members(people: People) -> None:
    alice, _ = people.sign_up("alice")
    bob, bob_name = people.sign_up("bob")
    start_direct(alice, bob_name)
    send(alice, "are you there?")
    open_conversation(bob, "Alice")
    bob.get_by_label("Message", exact=True).press_sequentially("let me chec")
    expect(alice.locator("#typing")).to_have_text("Bob is typing…", timeout=5_000)
    expect(alice.locator("#conversations a .preview")).to_have_text("Bob is typing…")
    bob.get_by_label("Message", exact=True).press("Enter")
    expect(alice.locator("#typing")).to_have_text("")


def test_presence_shows_a_closed_browser_going_offline(people: People) -> None:
    alice, _ = people.sign_up("alice")
    bob, bob_name = people.sign_up("bob")
    start_direct(alice, bob_name)
    dot = alice.locator("#conversations a .dot")
    expect(dot).to_have_attribute("data-status", "online")
    expect(alice.locator("#conv-title .dot")).to_have_attribute("data-status", "online")

    bob.context.close()
    expect(dot).to_have_attribute("data-status", "offline", timeout=PRESENCE_MS)
    expect(alice.locator("#conv-subtitle")).to_contain_text("last seen")


def test_friends_ask_accept_and_see_presence(people: People) -> None:
    alice, _ = people.sign_up("alice")
    bob, bob_name = people.sign_up("bob")
    alice.locator("#friends summary").click()
    alice.get_by_label("Add a friend by username").fill(bob_name)
    alice.get_by_role("button", name="Ask").click()
    expect(alice.locator("#friend-requests li")).to_contain_text("asked")

    expect(bob.locator("#friend-badge")).to_have_text("1")
    bob.locator("#friends summary").click()
    bob.get_by_role("button", name="Accept").click()
    expect(bob.locator("#friend-list li")).to_contain_text("Alice")

    friend = alice.locator("#friend-list li", has_text="Bob")
    expect(friend.locator(".dot")).to_have_attribute("data-status", "online")
    friend.get_by_role("button").click()
    expect(alice.locator("#conv-title")).to_contain_text("Bob")
