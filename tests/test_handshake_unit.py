"""The pre-auth handshake's rules, driven through the `Handshake` state object: no sockets, no event loop, no clock.

Each test feeds the object what happened (a frame, the timer, the connect's decision, the close) and checks the
actions it answers, as the server would carry them out. Expected values come from
../shared/reference/openclaw-gateway.md, sections 2-4; the socket-level checks are in test_handshake_frames.py.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, get_args

import pytest
from conftest import TOKEN, connect_params

from gateway_stub.generations import APRIL_2026, CURRENT, Generation
from gateway_stub.handshake import (
    Action,
    Bump,
    Close,
    CloseCause,
    ConsoleLine,
    Counter,
    DelayRejection,
    Dispatch,
    Endpoint,
    Handshake,
    LogLevel,
    Peer,
    Phase,
    Ready,
    Record,
    Register,
    Send,
    StartConnect,
)
from gateway_stub.metrics import COUNTERS
from gateway_stub.protocol import (
    Accepted,
    ConnectContext,
    GatewayError,
    Rejected,
    Request,
    decide_connect,
)
from openclaw_wire.log_records import LEVEL_IDS, StubEvent

CONN_ID = "0b5f8a52-3c1e-4d6a-9f2b-7e8d9c0a1b2c"
PEER = Peer(CONN_ID, Endpoint("127.0.0.1", 48270), Endpoint("127.0.0.1", 18789), host="127.0.0.1:18789",
            user_agent="Python/3.11 websockets/17.4")
DESCRIBED = (f"conn={CONN_ID} peer=127.0.0.1:48270->127.0.0.1:18789 remote=127.0.0.1 fwd=n/a origin=n/a "
             "host=127.0.0.1:18789 ua=Python/3.11 websockets/17.4")
MSG_FIRST_REQUEST = "invalid handshake: first request must be connect"
GENERATIONS = pytest.mark.parametrize("generation", [APRIL_2026, CURRENT], ids=lambda g: g.name)

ACCEPTED = Accepted(protocol=3, role="operator", scopes=("operator.approvals",),
                    client={"id": "gateway-client", "displayName": "Matrix Native Approvals (acct1)",
                            "version": "2026.4.24", "platform": "linux", "mode": "backend"},
                    caps=(), auth_method="token", device_id=None)
MISMATCH = GatewayError("INVALID_REQUEST", "unauthorized: gateway token mismatch (provide gateway auth token)",
                        {"code": "AUTH_TOKEN_MISMATCH"})
WRONG_TOKEN = Rejected(MISMATCH, 1008, MISMATCH.message, auth_failure=True)
BAD_ROLE = Rejected(GatewayError("INVALID_REQUEST", "invalid role"), 1008, "invalid role")


def request(request_id: str, method: str, params: Any = None) -> str:
    frame: dict[str, Any] = {"type": "req", "id": request_id, "method": method}
    if params is not None:
        frame["params"] = params
    return json.dumps(frame)


CONNECT = request("1:connect", "connect", connect_params())


def first_request_error(request_id: str) -> Send:
    error = {"code": "INVALID_REQUEST", "message": MSG_FIRST_REQUEST}
    return Send(json.dumps({"type": "res", "id": request_id, "ok": False, "error": error}, separators=(",", ":")))


def new(generation: Generation = APRIL_2026, *, auth_failure_delay: bool = False) -> Handshake:
    handshake = Handshake(PEER, generation, auth_failure_delay=auth_failure_delay)
    handshake.opened()
    return handshake


def connecting(generation: Generation = APRIL_2026, **options: bool) -> Handshake:
    """A handshake whose `connect` was read and is being processed."""
    handshake = new(generation, **options)
    [start] = handshake.frame_received(CONNECT, socket_open=True)
    assert isinstance(start, StartConnect)
    return handshake


def registered(generation: Generation = APRIL_2026) -> Handshake:
    handshake = connecting(generation)
    assert handshake.connect_cost_done(lambda: ACCEPTED, socket_open=True) == []
    assert handshake.hello_due(socket_open=True) == [Register(ACCEPTED)]
    return handshake


def ready(generation: Generation = APRIL_2026) -> Handshake:
    handshake = registered(generation)
    handshake.hello_prepared(42.4)
    handshake.hello_sent()
    return handshake


def never_decide() -> Accepted | Rejected:
    raise AssertionError("a connect cut during its cost must not be decided")


def records(actions: list[Action]) -> list[Record]:
    return [a for a in actions if isinstance(a, Record)]


# ---------------------------------------------------------------------------------------------
# Opening


def test_every_counter_and_level_the_handshake_names_exists() -> None:
    # The server bumps and logs them by name: a misspelt one would fail only when that rule first fires.
    assert set(get_args(Counter)) <= set(COUNTERS)
    assert set(get_args(LogLevel)) <= set(LEVEL_IDS)


def test_opening_counts_a_started_handshake_and_writes_an_open_record() -> None:
    handshake = Handshake(PEER, APRIL_2026, auth_failure_delay=False)
    assert handshake.opened() == [
        Bump("handshakes_started"),
        Record(StubEvent.WS_OPEN, "debug", f"open conn={CONN_ID} peer=127.0.0.1:48270->127.0.0.1:18789"),
    ]
    assert (handshake.phase, handshake.close_cause, handshake.registered) == (Phase.WS_UPGRADE_STARTED, None, False)


def test_peer_is_described_as_the_real_gateway_does() -> None:
    assert PEER.describe() == DESCRIBED
    forwarded = Peer("c", Endpoint("127.0.0.1", 1), Endpoint("127.0.0.1", 2), origin="http://x",
                     forwarded_for="10.0.0.9")
    assert forwarded.describe() == ("conn=c peer=127.0.0.1:1->127.0.0.1:2 remote=127.0.0.1 fwd=10.0.0.9 "
                                    "origin=http://x host=n/a ua=n/a")


@pytest.mark.parametrize(("address", "expected"), [
    (("127.0.0.1", 48270), "127.0.0.1:48270"),
    (("::1", 18789, 0, 0), "::1:18789"),
    (None, "n/a"),
    ("/run/gateway.sock", "n/a"),
])
def test_endpoint_of_a_socket_address(address: object, expected: str) -> None:
    assert str(Endpoint.of(address)) == expected


# ---------------------------------------------------------------------------------------------
# The first frame


@GENERATIONS
@pytest.mark.parametrize("frame", ["x" * 65_537, b"\x00" * 65_537, "\u00e9" * 32_769], ids=["text", "binary", "utf8"])
def test_frame_over_64_kib_closes_1009_with_an_empty_reason(generation: Generation, frame: str | bytes) -> None:
    # Recorded on 2026.4.24, 4.29 and 9.6; the size check comes before parsing (the text is not JSON either).
    handshake = new(generation)
    assert handshake.frame_received(frame, socket_open=True) == [Bump("handshakes_rejected_other"), Close(1009, "")]
    assert handshake.close_cause is CloseCause.PREAUTH_PAYLOAD_TOO_LARGE


def test_frame_of_exactly_64_kib_is_parsed_not_refused_for_size() -> None:
    handshake = new()
    actions = handshake.frame_received("x" * 65_536, socket_open=True)
    assert actions[-1] == Close(1000, "")  # refused as non-JSON, not 1009
    assert handshake.close_cause is CloseCause.INVALID_HANDSHAKE


@GENERATIONS
@pytest.mark.parametrize("frame", ["hello", "{", b"\xff\xfe\x00binary", b"hello"],
                         ids=["text", "partial-json", "binary-bytes", "binary-ascii"])
def test_non_json_first_frame_closes_1000_without_res(generation: Generation, frame: str | bytes) -> None:
    handshake = new(generation)
    assert handshake.frame_received(frame, socket_open=True) == [
        Bump("handshakes_rejected_other"), ConsoleLine(f"parse/handle error conn={CONN_ID}"), Close(1000, "")]
    assert handshake.close_cause is CloseCause.INVALID_HANDSHAKE


@pytest.mark.parametrize(
    "frame",
    [
        {"type": "event", "event": "tick", "payload": {}},
        {"type": "res", "id": "1", "ok": True},
        {"type": "req", "method": "connect", "params": {}},
        {"type": "req", "id": "", "method": "connect"},
        {"type": "req", "id": "1", "method": 7},
        [1, 2, 3],
        "just a string",
    ],
    ids=["event", "res", "req-without-id", "req-empty-id", "req-bad-method", "array", "json-string"],
)
def test_json_that_is_not_a_request_closes_1008(frame: Any) -> None:
    handshake = new()
    assert handshake.frame_received(json.dumps(frame), socket_open=True) == [
        Bump("handshakes_rejected_other"), ConsoleLine(f"invalid handshake {DESCRIBED}"),
        Close(1008, "invalid request frame")]


@GENERATIONS
def test_first_request_not_connect_is_answered_then_closed_1008(generation: Generation) -> None:
    handshake = new(generation)
    assert handshake.frame_received(request("h1", "health"), socket_open=True) == [
        Bump("handshakes_rejected_other"), first_request_error("h1"), Close(1008, MSG_FIRST_REQUEST)]
    assert handshake.close_cause is CloseCause.INVALID_HANDSHAKE
    assert handshake.phase is Phase.WS_UPGRADE_STARTED


@pytest.mark.parametrize("frame", [CONNECT, CONNECT.encode("utf-8")], ids=["text", "binary"])
def test_connect_starts_processing(frame: str | bytes) -> None:
    handshake = new()
    assert handshake.frame_received(frame, socket_open=True) == [
        StartConnect(Request("1:connect", "connect", connect_params()))]
    assert handshake.phase is Phase.AUTH_CREDENTIALS_RECEIVED
    assert handshake.connect_in_flight


def test_nothing_is_read_once_closing() -> None:
    refused = new()
    refused.frame_received("not json", socket_open=True)
    assert refused.frame_received(CONNECT, socket_open=True) == []
    # The peer started closing: no rule applies to its frames any more.
    assert new().frame_received(CONNECT, socket_open=False) == []
    assert new().frame_received("x" * 70_000, socket_open=False) == []


# ---------------------------------------------------------------------------------------------
# The handshake timer


@pytest.mark.parametrize(("generation", "phase"), [(APRIL_2026, ""), (CURRENT, " phase=ws_upgrade_started")],
                         ids=["april-2026", "current"])
def test_timer_closes_1000_and_logs_the_timeout_line(generation: Generation, phase: str) -> None:
    handshake = new(generation)
    message = f"handshake timeout conn={CONN_ID} peer=127.0.0.1:48270->127.0.0.1:18789 remote=127.0.0.1{phase}"
    assert handshake.timer_fired(10_003.4, socket_open=True) == [
        Bump("handshakes_timed_out"),
        Record(StubEvent.WS_HANDSHAKE_TIMEOUT, "warn", message, console=True),
        Close(1000, "", background=True),  # from the timer's callback: nothing to wait in
    ]
    assert handshake.close_cause is CloseCause.HANDSHAKE_TIMEOUT
    assert handshake.timed_out_after_ms == 10_003.4
    assert handshake.timer_fired(10_010.0, socket_open=True) == []  # fires once


def test_timer_does_nothing_after_registration_or_another_close() -> None:
    assert registered().timer_fired(20_000.0, socket_open=True) == []
    refused = new()
    refused.frame_received("{", socket_open=True)
    assert refused.timer_fired(10_000.0, socket_open=True) == []
    assert refused.close_cause is CloseCause.INVALID_HANDSHAKE
    gone = new()
    assert gone.timer_fired(10_000.0, socket_open=False) == []
    assert gone.timed_out_after_ms is None


def test_timer_during_the_connect_cost_cuts_the_connect_undecided() -> None:
    handshake = connecting(CURRENT)
    [_, timeout, _] = handshake.timer_fired(15_200.0, socket_open=True)
    assert isinstance(timeout, Record) and timeout.message.endswith(" phase=auth_credentials_received")
    assert handshake.connect_cost_done(never_decide, socket_open=True) == []
    assert (handshake.accepted, handshake.registered) == (None, False)


def test_timer_overdue_after_validation_still_cuts_the_connect() -> None:
    # The server fires an overdue timer itself after the cost (Node runs it before the connect continues).
    handshake = connecting(CURRENT)
    assert handshake.connect_cost_done(lambda: ACCEPTED, socket_open=True) == []
    assert handshake.phase is Phase.AUTH_VALIDATED
    [_, timeout, close] = handshake.timer_fired(15_400.0, socket_open=True)
    assert isinstance(timeout, Record) and timeout.message.endswith(" phase=auth_validated")
    assert close == Close(1000, "", background=True)
    assert handshake.hello_due(socket_open=True) == []
    assert not handshake.registered


# ---------------------------------------------------------------------------------------------
# Deciding the connect


def test_accepted_connect_registers_then_says_hello() -> None:
    handshake = connecting()
    assert handshake.connect_cost_done(lambda: ACCEPTED, socket_open=True) == []
    assert (handshake.phase, handshake.accepted, handshake.registered) == (Phase.AUTH_VALIDATED, ACCEPTED, False)
    assert handshake.hello_due(socket_open=True) == [Register(ACCEPTED)]
    assert handshake.registered
    assert handshake.hello_prepared(42.6) == []
    assert handshake.phase is Phase.HELLO_PAYLOAD_PREPARED
    assert handshake.hello_sent() == [
        Bump("handshakes_succeeded"),
        Record(StubEvent.WS_HELLO, "info", f"hello conn={CONN_ID} client='Matrix Native Approvals (acct1)'",
               {"handshakeMs": 43, "role": "operator"}),
        Ready(42.6),
    ]
    assert (handshake.phase, handshake.connect_in_flight) == (Phase.READY, False)


def test_hello_names_a_client_without_display_name_by_its_id() -> None:
    handshake = connecting()
    anonymous = Accepted(protocol=3, role="operator", scopes=(), client={"id": "cli", "mode": "cli"}, caps=(),
                         auth_method="token", device_id=None)
    handshake.connect_cost_done(lambda: anonymous, socket_open=True)
    handshake.hello_due(socket_open=True)
    handshake.hello_prepared(5.0)
    assert records(handshake.hello_sent())[0].message == f"hello conn={CONN_ID} client='cli'"


def test_socket_gone_during_the_hello_latency_registers_nothing() -> None:
    handshake = connecting()
    handshake.connect_cost_done(lambda: ACCEPTED, socket_open=True)
    assert handshake.hello_due(socket_open=False) == []
    assert not handshake.registered


def test_socket_gone_during_the_cost_leaves_the_connect_undecided() -> None:
    assert connecting().connect_cost_done(never_decide, socket_open=False) == []


@pytest.mark.parametrize("auth_failure_delay", [False, True])
def test_refused_connect_is_answered_and_closed_with_its_code(auth_failure_delay: bool) -> None:
    # Not an auth failure: the loopback back-off does not apply, whether it is on or not.
    handshake = connecting(auth_failure_delay=auth_failure_delay)
    reply = Send(json.dumps({"type": "res", "id": "1:connect", "ok": False,
                             "error": {"code": "INVALID_REQUEST", "message": "invalid role"}}, separators=(",", ":")))
    assert handshake.connect_cost_done(lambda: BAD_ROLE, socket_open=True) == [
        Bump("handshakes_rejected_other"),
        Record(StubEvent.WS_CONNECT_REJECTED, "warn", f"connect rejected conn={CONN_ID} code=INVALID_REQUEST",
               {"error": "invalid role", "closeCode": 1008}),
        reply,
        Close(1008, "invalid role"),
    ]
    assert handshake.close_cause is CloseCause.CONNECT_REJECTED
    assert handshake.accepted is None


def test_auth_failure_without_the_delay_is_answered_at_once() -> None:
    actions = connecting(auth_failure_delay=False).connect_cost_done(lambda: WRONG_TOKEN, socket_open=True)
    assert actions[0] == Bump("handshakes_auth_failed")
    assert actions[-1] == Close(1008, MISMATCH.message)


def test_auth_failure_with_the_delay_is_answered_after_it() -> None:
    handshake = connecting(CURRENT, auth_failure_delay=True)
    assert handshake.connect_cost_done(lambda: WRONG_TOKEN, socket_open=True) == [
        Record(StubEvent.WS_CONNECT_REJECTED, "warn", f"connect rejected conn={CONN_ID} code=INVALID_REQUEST",
               {"error": MISMATCH.message, "closeCode": 1008}),
        DelayRejection(),
    ]
    assert handshake.close_cause is None  # still open while it waits
    # Counted as an auth failure once answered: until then the timer may still make it a timeout.
    [bump, reply, close] = handshake.rejection_due(socket_open=True)
    assert bump == Bump("handshakes_auth_failed")
    assert isinstance(reply, Send) and json.loads(reply.frame)["error"]["details"] == {"code": "AUTH_TOKEN_MISMATCH"}
    assert close == Close(1008, MISMATCH.message)


def test_timer_during_the_auth_failure_delay_wins() -> None:
    handshake = connecting(CURRENT, auth_failure_delay=True)
    delayed = handshake.connect_cost_done(lambda: WRONG_TOKEN, socket_open=True)
    timed_out = handshake.timer_fired(15_000.0, socket_open=True)
    assert timed_out[-1] == Close(1000, "", background=True)
    assert handshake.rejection_due(socket_open=True) == []
    assert handshake.close_cause is CloseCause.HANDSHAKE_TIMEOUT
    # One outcome: the timeout the client saw, not also the auth failure it never heard of.
    assert [a for a in delayed + timed_out if isinstance(a, Bump)] == [Bump("handshakes_timed_out")]


def without_auth() -> dict[str, Any]:
    params = connect_params()
    del params["auth"]
    return params


@pytest.mark.parametrize(
    ("generation", "params", "error", "code", "reason"),
    [
        pytest.param(CURRENT, connect_params(4, auth={"token": "wrong"}),
                     {"code": "INVALID_REQUEST", "message": MISMATCH.message,
                      "details": {"code": "AUTH_TOKEN_MISMATCH", "authReason": "token_mismatch",
                                  "canRetryWithDeviceToken": False,
                                  "recommendedNextStep": "update_auth_credentials"}},
                     1008, MISMATCH.message, id="wrong-token-current"),
        pytest.param(APRIL_2026, without_auth(),
                     {"code": "NOT_PAIRED", "message": "device identity required",
                      "details": {"code": "DEVICE_IDENTITY_REQUIRED"}},
                     1008, "device identity required", id="no-auth"),
        pytest.param(APRIL_2026, connect_params(4),  # details recorded on 2026.4.24 and 4.29
                     {"code": "INVALID_REQUEST", "message": "protocol mismatch", "details": {"expectedProtocol": 3}},
                     1002, "protocol mismatch", id="protocol-mismatch-april"),
        pytest.param(APRIL_2026, connect_params(modelCatalog={}),
                     {"code": "INVALID_REQUEST",
                      "message": "invalid connect params: at root: unexpected property 'modelCatalog'"},
                     1008, "invalid connect params: at root: unexpected property 'modelCatalog'",
                     id="schema-april-model-catalog"),
        pytest.param(APRIL_2026, connect_params(role="superuser"),
                     {"code": "INVALID_REQUEST", "message": "invalid role"}, 1008, "invalid role", id="invalid-role"),
        pytest.param(APRIL_2026,
                     connect_params(client={"id": "openclaw-control-ui", "version": "1", "platform": "web",
                                            "mode": "ui"}),
                     {"code": "INVALID_REQUEST",
                      "message": "control ui requires device identity (use HTTPS or localhost secure context)",
                      "details": {"code": "CONTROL_UI_DEVICE_IDENTITY_REQUIRED"}},
                     1008, "control ui requires device identity (use HTTPS or localhost secure context)",
                     id="ui-without-device"),
    ],
)
def test_refused_connect_frames_and_closes(
    generation: Generation, params: dict[str, Any], error: dict[str, Any], code: int, reason: str
) -> None:
    """decide_connect's refusal, as the handshake sends it: the exact res frame, then the close."""
    context = ConnectContext(generation=generation, auth_mode="token", shared_secret=TOKEN, peer_is_loopback=True,
                             has_origin=False, has_forwarded_headers=False, challenge_nonce="n", now_ms=0)
    handshake = connecting(generation)
    actions = handshake.connect_cost_done(lambda: decide_connect(params, context), socket_open=True)
    [reply, close] = actions[-2:]
    assert isinstance(reply, Send)
    assert json.loads(reply.frame) == {"type": "res", "id": "1:connect", "ok": False, "error": error}
    assert close == Close(code, reason)


# ---------------------------------------------------------------------------------------------
# Frames sent while the connect is processed


def test_current_queues_15_frames_and_closes_on_the_16th() -> None:
    handshake = connecting(CURRENT)
    for index in range(15):
        assert handshake.frame_received(request(f"h{index}", "health"), socket_open=True) == []
    assert len(handshake.queued) == 15
    assert handshake.frame_received(request("h15", "health"), socket_open=True) == [
        Bump("handshakes_rejected_other"), Close(1008, "too many pending handshake frames")]
    assert handshake.close_cause is CloseCause.TOO_MANY_PENDING_FRAMES
    assert handshake.frame_received(request("h16", "health"), socket_open=True) == []
    # The connect is abandoned with the socket: no hello, whatever its decision would have been.
    assert handshake.connect_cost_done(never_decide, socket_open=True) == []


def test_current_hands_queued_frames_to_the_request_handler_after_hello_in_order() -> None:
    handshake = connecting(CURRENT)
    frames: list[str | bytes] = [request("h0", "health"), "not json", b'{"type":"req","id":"h2","method":"status"}']
    for frame in frames:
        assert handshake.frame_received(frame, socket_open=True) == []
    handshake.connect_cost_done(lambda: ACCEPTED, socket_open=True)
    handshake.hello_due(socket_open=True)
    handshake.hello_prepared(300.0)
    actions = handshake.hello_sent()
    assert actions[-3:] == [Dispatch(frame) for frame in frames]
    assert handshake.queued == ()


@GENERATIONS
def test_frames_after_registration_go_to_the_request_handler(generation: Generation) -> None:
    # Registered but hello-ok not yet sent (the after-timer cost burns): not queued, not refused.
    handshake = registered(generation)
    assert handshake.frame_received(request("h0", "health"), socket_open=True) == [Dispatch(request("h0", "health"))]
    assert handshake.frame_received("junk", socket_open=False) == [Dispatch("junk")]
    handshake.hello_prepared(1.0)
    assert not any(isinstance(a, Dispatch) for a in handshake.hello_sent())


@pytest.mark.parametrize("sent", [1, 3, 16])
def test_april_answers_each_request_sent_during_connect_then_closes_1008(sent: int) -> None:
    # April has no pending-frame queue (recorded on 2026.4.24 and 4.29): every request read while the connect is
    # processed gets its own "first request must be connect" res, the close follows the frames already read.
    handshake = connecting(APRIL_2026)
    first = handshake.frame_received(request("h0", "health"), socket_open=True)
    assert first == [first_request_error("h0"), Bump("handshakes_rejected_other"),
                     Close(1008, MSG_FIRST_REQUEST, background=True)]
    for index in range(1, sent):
        assert handshake.frame_received(request(f"h{index}", "health"), socket_open=True) == [
            first_request_error(f"h{index}")]
    assert handshake.close_cause is CloseCause.INVALID_HANDSHAKE
    # ...until the close is under way; the connect itself gets no reply, valid token or not.
    assert handshake.frame_received(request("late", "health"), socket_open=False) == []
    assert handshake.connect_cost_done(never_decide, socket_open=True) == []


def test_april_request_during_the_hello_latency_cuts_the_accepted_connect() -> None:
    # Sent in its own TCP write after the connect was validated (recorded: only that frame is answered).
    handshake = connecting(APRIL_2026)
    handshake.connect_cost_done(lambda: ACCEPTED, socket_open=True)
    assert handshake.frame_received(request("h0", "health"), socket_open=True) == [
        first_request_error("h0"), Bump("handshakes_rejected_other"), Close(1008, MSG_FIRST_REQUEST, background=True)]
    assert handshake.hello_due(socket_open=True) == []
    assert not handshake.registered


def test_april_answers_a_second_connect_sent_during_connect_like_any_request() -> None:
    handshake = connecting(APRIL_2026)
    assert handshake.frame_received(request("2:connect", "connect", connect_params()), socket_open=True)[0] == (
        first_request_error("2:connect"))


def test_april_does_not_answer_a_non_request_sent_while_it_answers() -> None:
    handshake = connecting(APRIL_2026)
    handshake.frame_received(request("h0", "health"), socket_open=True)
    assert handshake.frame_received("not json", socket_open=True) == []
    assert handshake.frame_received(json.dumps({"type": "event"}), socket_open=True) == []


def test_april_oversized_frame_while_it_answers_is_neither_closed_nor_counted_again() -> None:
    # Found by tests/test_fuzz_stub.py: the handshake was counted refused twice, once per frame.
    handshake = connecting(APRIL_2026)
    handshake.frame_received(request("h0", "health"), socket_open=True)
    assert handshake.frame_received("x" * 65_537, socket_open=True) == []


def test_april_closes_1000_on_non_json_sent_during_connect() -> None:
    handshake = connecting(APRIL_2026)
    assert handshake.frame_received("{", socket_open=True)[-1] == Close(1000, "")
    assert handshake.close_cause is CloseCause.INVALID_HANDSHAKE


def test_current_queues_even_non_json_during_connect() -> None:
    handshake = connecting(CURRENT)
    assert handshake.frame_received("{", socket_open=True) == []
    assert handshake.queued == ("{",)


@GENERATIONS
def test_oversized_frame_during_connect_closes_1009(generation: Generation) -> None:
    handshake = connecting(generation)
    assert handshake.frame_received("x" * 65_537, socket_open=True) == [
        Bump("handshakes_rejected_other"), Close(1009, "")]
    assert handshake.queued == ()


# ---------------------------------------------------------------------------------------------
# After hello


def test_slow_consumer_closes_1008_once() -> None:
    handshake = ready()
    assert handshake.slow_consumer(socket_open=True) == [Close(1008, "slow consumer")]
    assert handshake.close_cause is CloseCause.SLOW_CONSUMER
    assert handshake.slow_consumer(socket_open=True) == []
    assert ready().slow_consumer(socket_open=False) == []


# ---------------------------------------------------------------------------------------------
# The close


def test_closed_after_timeout_on_current_writes_the_recorded_line_and_fields_in_order() -> None:
    handshake = new(CURRENT)
    handshake.timer_fired(15_001.2, socket_open=True)
    [bump, record] = handshake.closed(1000, "", 15_006.4996)
    assert bump == Bump("closed_before_connect")
    assert record.event is StubEvent.WS_CLOSED_BEFORE_CONNECT and record.level == "warn"
    assert record.message == f"closed before connect {DESCRIBED} code=1000 reason=n/a phase=ws_upgrade_started"
    assert (record.console, record.console_fields) == (True, True)  # 2026.9.6 appends the fields (--verbose)
    assert record.fields is not None
    assert list(record.fields.items()) == [
        ("cause", "handshake-timeout"), ("durationMs", 15006), ("handshake", "failed"),
        ("phase", "ws_upgrade_started"), ("host", "127.0.0.1:18789"), ("userAgent", "Python/3.11 websockets/17.4"),
        ("remoteAddr", "127.0.0.1"), ("remotePort", 48270), ("localAddr", "127.0.0.1"), ("localPort", 18789),
        ("endpoint", "127.0.0.1:48270->127.0.0.1:18789"), ("handshakeMs", 15001),
    ]


def test_closed_on_april_has_no_phase_and_prints_no_fields() -> None:
    handshake = new(APRIL_2026)
    handshake.timer_fired(10_000.0, socket_open=True)
    [_, record] = handshake.closed(1000, "", 10_002.0)
    assert record.message == f"closed before connect {DESCRIBED} code=1000 reason=n/a"
    assert (record.console, record.console_fields) == (True, False)
    assert record.fields is not None and "phase" not in record.fields
    assert (record.fields["cause"], record.fields["handshakeMs"]) == ("handshake-timeout", 10_000)


def test_closed_by_the_peer_before_connect_carries_no_cause() -> None:
    [_, record] = new(CURRENT).closed(None, None, 12.0)
    assert record.message == f"closed before connect {DESCRIBED} code=n/a reason=n/a phase=ws_upgrade_started"
    assert record.fields is not None
    assert "cause" not in record.fields and "handshakeMs" not in record.fields


@pytest.mark.parametrize(("drive", "cause"), [
    (lambda h: h.frame_received("{", socket_open=True), "invalid-handshake"),
    (lambda h: h.frame_received("x" * 65_537, socket_open=True), "preauth-payload-too-large"),
])
def test_closed_after_a_refused_frame_names_the_cause(drive: Callable[[Handshake], object], cause: str) -> None:
    handshake = new(CURRENT)
    drive(handshake)
    [_, record] = handshake.closed(1000, "", 3.0)
    assert record.fields is not None and record.fields["cause"] == cause


def test_closed_after_hello_writes_a_close_record_only() -> None:
    assert ready(CURRENT).closed(1000, "bye", 60_000.4) == [
        Record(StubEvent.WS_CLOSE, "info", f"closed conn={CONN_ID} code=1000 reason=bye", {"durationMs": 60000})]
