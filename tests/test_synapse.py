"""A real Matrix homeserver on loopback (harness/backends/synapse.py): Synapse started, used and stopped whole.

Marked `matrix`: skipped with the reason where Synapse (the extra `matrix`) is not installed; CI installs it and
sets HARNESS_REQUIRE_MATRIX=1, so a skip fails there. Each start takes about 5 s.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from conftest import require_synapse

from harness.backends.local_service import non_loopback_sockets, remove_orphaned_dirs, session_pids
from harness.backends.synapse import SynapseHomeserver
from harness.errors import BackendError, BadInput

pytestmark = pytest.mark.matrix


def test_a_homeserver_serves_its_owner_and_bots_on_loopback_and_leaves_nothing(tmp_path: Path) -> None:
    require_synapse()
    with SynapseHomeserver(bots=3, log_dir=tmp_path) as homeserver:
        pid, port, home = homeserver.pid, homeserver.port, homeserver.home
        owner, bot = homeserver.owner, homeserver.bots[0]
        assert owner is not None and owner.user_id == "@owner:localhost"
        assert [b.user_id for b in homeserver.bots] == [f"@bot00{n}:localhost" for n in (1, 2, 3)]
        assert len({b.access_token for b in homeserver.bots}) == 3
        assert homeserver.call("GET", "/_matrix/client/v3/account/whoami", token=bot.access_token) == {
            "user_id": bot.user_id, "is_guest": False, "device_id": bot.device_id}
        # the owner opens a direct chat with the bot, as a user of a bot account would, and writes in it
        room = homeserver.call("POST", "/_matrix/client/v3/createRoom", {
            "preset": "trusted_private_chat", "is_direct": True, "invite": [bot.user_id]},
            token=owner.access_token)["room_id"]
        homeserver.call("POST", f"/_matrix/client/v3/join/{room}", {}, token=bot.access_token)
        homeserver.call("PUT", f"/_matrix/client/v3/rooms/{room}/send/m.room.message/1",
                        {"msgtype": "m.text", "body": "approve?"}, token=owner.access_token)
        synced = homeserver.call("GET", "/_matrix/client/v3/sync?timeout=0", token=bot.access_token)
        timeline = synced["rooms"]["join"][room]["timeline"]["events"]
        assert [e["content"].get("body") for e in timeline if e["type"] == "m.room.message"] == ["approve?"]
        assert non_loopback_sockets(pid) == [] and homeserver.external_sockets == []
        assert home is not None and (home / "homeserver.db").is_file()
    assert session_pids(pid) == []
    assert home is not None and not home.exists()
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port), timeout=2):
        pass
    assert "Main loop terminated" in (tmp_path / "synapse.log").read_text()


def test_a_failed_request_names_the_call_and_the_answer(tmp_path: Path) -> None:
    require_synapse()
    answered = r"^Synapse answered GET /_matrix/client/v3/account/whoami with 401: "
    with SynapseHomeserver(bots=0, log_dir=tmp_path) as homeserver, pytest.raises(BackendError, match=answered):
        homeserver.call("GET", "/_matrix/client/v3/account/whoami", token="not-a-token")


# A harness process that starts a homeserver and is then stopped from outside (Ctrl-C) or killed (SIGKILL).
HARNESS = textwrap.dedent("""
    import sys
    from pathlib import Path
    from harness.backends.synapse import SynapseHomeserver
    with SynapseHomeserver(bots=1, log_dir=Path(sys.argv[1])) as homeserver:
        print(homeserver.pid, homeserver.home, flush=True)
        import time
        time.sleep(120)
""")


@pytest.mark.parametrize("stop", [signal.SIGINT, signal.SIGKILL], ids=["ctrl-c", "killed"])
def test_a_harness_stopped_or_killed_leaves_no_homeserver_behind(stop: signal.Signals, tmp_path: Path) -> None:
    require_synapse()
    harness = subprocess.Popen([sys.executable, "-c", HARNESS, str(tmp_path)], stdout=subprocess.PIPE, text=True)
    try:
        assert harness.stdout is not None
        pid_text, home_text = harness.stdout.readline().split()
        pid, home = int(pid_text), Path(home_text)
        assert session_pids(pid) == [pid]
        harness.send_signal(stop)
        harness.wait(30)
    finally:
        if harness.poll() is None:
            harness.kill()
    deadline = time.monotonic() + 20  # killed: the kernel sends Synapse SIGTERM (PR_SET_PDEATHSIG)
    while session_pids(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert session_pids(pid) == []
    if stop == signal.SIGKILL:  # no one removed its folder: the next harness does
        remove_orphaned_dirs("synapse")
    assert not home.exists()


def test_bad_bot_counts_and_a_missing_synapse_are_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import harness.backends.synapse as synapse

    with pytest.raises(BadInput, match=r"^bots: expected 0 to 500 Matrix bot users, got -1$"):
        SynapseHomeserver(bots=-1, log_dir=tmp_path)
    monkeypatch.setattr(synapse, "synapse_installed", lambda: False)
    with pytest.raises(BackendError, match=r"^Synapse is not installed in .*pip install -e '\.\[matrix\]'"):
        SynapseHomeserver(bots=1, log_dir=tmp_path).start()
    assert not list(Path(os.environ.get("TMPDIR", "/tmp")).glob(f"synapse-home-{os.getpid()}-*"))
