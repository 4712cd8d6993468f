import os
import socket
import uuid

import pytest

from retrofit_agent.service.sdnotify import Notifier, Watchdog


@pytest.fixture
def notify_socket(tmp_path):
    """A real unix datagram socket standing in for systemd's; yields (address, receive)."""
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(0.3)  # messages are local and immediate; a timeout means none was sent

    def receive() -> list[str]:
        return sock.recv(4096).decode().split("\n")

    yield str(path), receive
    sock.close()


def test_messages_arrive_as_key_value_datagrams(notify_socket):
    address, receive = notify_socket
    notifier = Notifier.from_environ({"NOTIFY_SOCKET": address})
    notifier.ready("running")
    assert receive() == ["READY=1", "STATUS=running"]
    notifier.status("camera lost")
    assert receive() == ["STATUS=camera lost"]
    notifier.reloading()
    reloading = receive()
    assert reloading[0] == "RELOADING=1" and reloading[1].startswith("MONOTONIC_USEC=")
    notifier.stopping()
    assert receive() == ["STOPPING=1", "STATUS=stopping"]
    notifier.close()


def test_abstract_socket_address():
    name = f"retrofit-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(1)
    try:
        assert Notifier(f"@{name}").send("READY=1")
        assert sock.recv(100) == b"READY=1"
    finally:
        sock.close()


def test_outside_systemd_nothing_is_sent_and_nothing_fails(tmp_path):
    assert Notifier.from_environ({}).send("READY=1") is False
    gone = Notifier(str(tmp_path / "nobody-listens.sock"))
    assert gone.send("READY=1") is False  # systemd went away: the agent carries on


def test_a_receiver_that_does_not_read_never_blocks_the_sender(notify_socket):
    address, _ = notify_socket  # bound, never read: its queue fills up
    notifier = Notifier(address)
    results = [notifier.send(f"STATUS={i}") for i in range(5000)]
    assert results[0] and not results[-1]  # later messages are dropped, not waited on


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_watchdog_pings_at_half_the_timeout_only_on_progress(notify_socket):
    address, receive = notify_socket
    clock = Clock()
    environ = {"WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    watchdog = Watchdog(Notifier(address), environ, clock)
    assert watchdog.timeout_s == 2.0
    watchdog.progress()
    assert receive() == ["WATCHDOG=1"]  # the first progress pings at once
    pings = 0
    for _ in range(32):  # 4 s of progress every 1/8 s: a ping per second
        clock.now += 0.125
        watchdog.progress()
    with pytest.raises(TimeoutError):
        while True:
            assert receive() == ["WATCHDOG=1"]
            pings += 1
    assert pings == 4
    clock.now += 10  # no progress reported for 10 s: no ping went out meanwhile
    with pytest.raises(TimeoutError):
        receive()


@pytest.mark.parametrize(
    "environ",
    [
        {},
        {"WATCHDOG_USEC": "0"},
        {"WATCHDOG_USEC": "x"},
        {"WATCHDOG_USEC": "5", "WATCHDOG_PID": "1"},
    ],
)
def test_watchdog_off_unless_systemd_asked_this_process(environ, notify_socket):
    address, receive = notify_socket
    watchdog = Watchdog(Notifier(address), environ)
    assert watchdog.timeout_s is None
    watchdog.progress()
    with pytest.raises(TimeoutError):
        receive()
