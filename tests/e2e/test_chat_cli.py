"""``hubbub chat`` as a person uses it: typed lines go out, arriving messages are printed."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.support.api import PASSWORD, ApiClient
from tests.support.chat import ClientFactory, expect_event
from tests.support.platform import REPO_ROOT, Platform
from tests.support.processes import ReadyProcess


def test_chatting_from_the_terminal(platform: Platform, clients: ClientFactory) -> None:
    username = ApiClient.unique_username("term")
    bob = clients()
    bob_name = bob.request("GET", "/v1/users/me").json()["username"]
    env = os.environ | {"HUBBUB_CHAT_PASSWORD": PASSWORD}
    argv = [
        sys.executable,
        "-m",
        "launcher.cli",
        "chat",
        "--server",
        platform.http_url,
        "--user",
        username,
        "--sign-up",
    ]
    chat = subprocess.Popen(
        argv,
        cwd=REPO_ROOT,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    process = ReadyProcess.attach(chat, platform.data_dir / "chat.log")
    try:
        process.wait_for_line(lambda line: line.startswith("* connected"))
        assert chat.stdin is not None
        chat.stdin.write(f"/dm {bob_name}\nhello from the terminal\n")
        chat.stdin.flush()
        process.wait_for_line(lambda line: line.startswith("* talking in"))
        received = expect_event(bob, "message")
        assert received["text"] == "hello from the terminal"
        bob.send(received["conversation_id"], "hello terminal")
        line = process.wait_for_line(lambda text: "hello terminal" in text)
        assert line.endswith(": hello terminal")
        # The same user on a phone: the terminal shows what the phone sent, as the user's own.
        phone = clients(username)
        phone.send(received["conversation_id"], "from my phone")
        line = process.wait_for_line(lambda text: "from my phone" in text)
        assert line.endswith("] you, on another device: from my phone")
        chat.stdin.write("/quit\n")
        chat.stdin.close()
        assert chat.wait(timeout=30) == 0
    finally:
        process.stop()


def test_a_wrong_password_is_refused(platform: Platform) -> None:
    env = os.environ | {"HUBBUB_CHAT_PASSWORD": "wrong password"}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "launcher.cli",
            "chat",
            "--server",
            platform.http_url,
            "--user",
            "nobody_here",
        ],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 1
    assert "wrong username or password" in result.stderr
