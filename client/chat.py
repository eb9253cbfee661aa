"""``hubbub chat``: talk as a user from a terminal, through the same client the tests use.

Lines you type are sent to the open conversation; lines starting with ``/`` are commands
(``/help`` lists them). Everything that arrives is printed as ``[conversation] sender: text``.
"""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TextIO

from client.client import HubbubClient, LoginFailed
from hubbub.events import InboxEvent

__all__ = ["main"]

HELP = """commands:
  /list                      your conversations, with unread counts
  /dm USERNAME               open (or start) the 1:1 chat with USERNAME
  /group TITLE USER[,USER]   create a group and open it
  /open N                    open conversation N of /list
  /history                   the last 20 messages of the open conversation
  /quit                      leave
anything else is sent to the open conversation"""


class Chat:
    """The terminal session: one client, one open conversation, printing as events arrive."""

    def __init__(self, client: HubbubClient, out: TextIO) -> None:
        self.client = client
        self.out = out
        self.current: str | None = None
        self.listed: list[dict[str, Any]] = []
        self.names: dict[str, str] = {}
        self._lock = threading.Lock()

    def say(self, text: str) -> None:
        """Print a line now (events arrive on paho's thread)."""
        with self._lock:
            print(text, file=self.out, flush=True)

    def on_event(self, event: InboxEvent) -> None:
        """Show messages, delivery failures and conversation changes."""
        if event["kind"] == "message":  # never one this device sent (that comes back as an ack)
            mine = event["sender_id"] == self.client.user_id
            sender = "you, on another device" if mine else self._name(event["sender_id"])
            self.say(f"[{self._title(event['conversation_id'])}] {sender}: {event['text']}")
        elif event["kind"] == "error":
            self.say(f"! not sent ({event['code']}): {event['message']}")
        elif event["kind"] == "conversation":
            conversation = event["conversation"]
            self.say(f"* {event['action'].replace('_', ' ')}: {conversation['title'] or 'direct chat'}")

    def _name(self, user_id: str) -> str:
        if user_id not in self.names:
            response = self.client.request("GET", f"/v1/users/{user_id}")
            self.names[user_id] = (
                response.json().get("display_name", user_id) if response.is_success else user_id
            )
        return self.names[user_id]

    def _title(self, conversation_id: str) -> str:
        for conversation in self.listed:
            if conversation["id"] == conversation_id:
                return str(conversation["title"] or conversation["peer"])
        return conversation_id

    def handle(self, line: str) -> bool:
        """Act on one typed line; False to quit."""
        words = line.strip().split(maxsplit=2)
        if not words:
            return True
        if words[0] == "/quit":
            return False
        if not words[0].startswith("/"):
            if self.current is None:
                self.say("! open a conversation first (/dm USERNAME or /list and /open N)")
            else:
                self.client.send(self.current, line.rstrip("\n"))
            return True
        commands: dict[tuple[str, int], Callable[[], None]] = {
            ("/list", 1): self.list_conversations,
            ("/history", 1): self.history,
            ("/dm", 2): lambda: self.open_direct(words[1]),
            ("/open", 2): lambda: self.open_listed(words[1]),
            ("/group", 3): lambda: self.create_group(words[1], words[-1].split(",")),
        }
        commands.get((words[0], len(words)), lambda: self.say(HELP))()
        return True

    def list_conversations(self) -> None:
        """Print my conversations, numbered for /open."""
        conversations = self.client.request("GET", "/v1/conversations").json()["conversations"]
        me = self.client.user_id
        self.listed = []
        for number, conversation in enumerate(conversations, start=1):
            peers = [m["display_name"] for m in conversation["members"] if m["user_id"] != me]
            conversation["peer"] = ", ".join(peers)
            self.listed.append(conversation)
            last = conversation["last_message"]["text"][:40] if conversation["last_message"] else ""
            title = conversation["title"] or conversation["peer"]
            self.say(f"{number}. {title} ({conversation['unread_count']} unread) {last}")

    def open_direct(self, username: str) -> None:
        """Open the 1:1 chat with ``username``."""
        found = self.client.request("GET", "/v1/users", params={"username": username}).json()
        if not found:
            self.say(f"! no user {username}")
            return
        body = {"type": "direct", "user_id": found[0]["id"]}
        conversation = self.client.request("POST", "/v1/conversations", json=body).json()
        self._open(conversation["id"], found[0]["display_name"])

    def create_group(self, title: str, usernames: list[str]) -> None:
        """Create a group of ``usernames`` and open it."""
        ids = []
        for username in usernames:
            found = self.client.request("GET", "/v1/users", params={"username": username}).json()
            if not found:
                self.say(f"! no user {username}")
                return
            ids.append(found[0]["id"])
        body = {"type": "group", "title": title, "member_ids": ids}
        response = self.client.request("POST", "/v1/conversations", json=body)
        if not response.is_success:
            self.say(f"! {response.json()['error']['message']}")
            return
        self._open(response.json()["id"], title)

    def open_listed(self, number_text: str) -> None:
        """Open conversation ``number`` of the last /list."""
        number = int(number_text) if number_text.isdigit() else 0
        if not 1 <= number <= len(self.listed):
            self.say("! /list first, then /open one of its numbers")
            return
        conversation = self.listed[number - 1]
        self._open(conversation["id"], conversation["title"] or conversation["peer"])

    def _open(self, conversation_id: str, title: str) -> None:
        self.current = conversation_id
        self.listed.append({"id": conversation_id, "title": title, "peer": title})
        self.say(f"* talking in {title}")

    def history(self) -> None:
        """Print the last 20 messages of the open conversation, and mark them read."""
        if self.current is None:
            self.say("! open a conversation first")
            return
        page = self.client.request(
            "GET", f"/v1/conversations/{self.current}/messages", params={"limit": 20}
        ).json()
        for message in page["messages"]:
            self.say(f"  {self._name(message['sender_id'])}: {message['text']}")
        if page["messages"]:
            seq = page["messages"][-1]["seq"]
            self.client.request("POST", f"/v1/conversations/{self.current}/read", json={"seq": seq})


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``hubbub chat``."""
    parser = argparse.ArgumentParser(prog="hubbub chat", description=__doc__.splitlines()[0])
    parser.add_argument("--server", default="http://localhost:8000", help="the platform's HTTP address")
    parser.add_argument("--user", required=True, help="your username")
    parser.add_argument("--sign-up", action="store_true", help="create the account first")
    args = parser.parse_args(argv)
    password = os.environ.get("HUBBUB_CHAT_PASSWORD") or getpass.getpass(f"password for {args.user}: ")
    client = HubbubClient(args.server)
    chat = Chat(client, sys.stdout)
    try:
        if args.sign_up:
            client.sign_up(args.user, password)
        client.login(args.user, password)
    except LoginFailed:
        print("hubbub chat: wrong username or password", file=sys.stderr)  # noqa: T201
        client.close()
        return 1
    client.subscribe_events(chat.on_event)
    client.connect()
    chat.say(f"* connected as {args.user}; /help for commands")
    try:
        for line in sys.stdin:
            if not chat.handle(line):
                break
    finally:
        client.close()
    return 0
