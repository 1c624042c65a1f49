"""The request body on its way upstream (http_body.RequestBody): what waits, what is kept for a replay, and
when the client must stop sending."""

from __future__ import annotations

from ukproxy.proxy import http_messages as msg
from ukproxy.proxy.http_body import PENDING_HIGH, REPLAY_LIMIT, RequestBody
from ukproxy.proxy.http_request import RequestHead


def head(method: bytes = b"PUT", content_length: int | None = 10, chunked: bool = False) -> RequestHead:
    h = RequestHead(method, b"/", b"1.1", [], [])
    h.content_length = content_length
    h.chunked = chunked
    return h


def test_a_bodyless_request_is_done_and_a_get_is_replayable():
    body = RequestBody(head(b"GET", content_length=None))
    assert body.done and body.all_sent and body.replayable
    assert body.with_head(b"HEAD-BYTES") == b"HEAD-BYTES"


def test_a_post_is_never_replayable():
    body = RequestBody(head(b"POST"))
    assert not body.done and not body.replayable
    body.sent([b"abc"])
    assert not body.replayable


def test_what_waited_goes_with_the_head_and_is_kept_for_the_next_attempt():
    body = RequestBody(head(b"PUT"))
    assert not body.hold(b"hello")
    assert body.end() is None and body.done
    assert not body.all_sent  # "hello" still waits
    assert body.with_head(b"H|") == b"H|hello"
    assert body.all_sent
    assert body.forget_held()  # the client may have been paused for it
    assert not body.forget_held()
    assert body.with_head(b"H2|") == b"H2|hello"  # a retry sends it again


def test_a_body_past_the_replay_limit_cannot_be_replayed():
    body = RequestBody(head(b"PUT", content_length=REPLAY_LIMIT + 1))
    body.sent([b"x" * REPLAY_LIMIT])
    assert body.replayable
    body.sent([b"y"])
    assert not body.replayable


def test_the_response_ends_any_replay():
    body = RequestBody(head(b"PUT"))
    body.sent([b"abc"])
    body.stop_replay()
    assert not body.replayable


def test_a_chunked_body_is_framed_again_and_ended_with_the_last_chunk():
    body = RequestBody(head(b"PUT", content_length=None, chunked=True))
    assert body.frame(b"abc") == msg.chunk(b"abc")
    assert body.end() == msg.LAST_CHUNK


def test_the_client_pauses_once_held_bytes_pass_the_high_mark():
    body = RequestBody(head(b"PUT", content_length=2 * PENDING_HIGH))
    assert not body.hold(b"x" * PENDING_HIGH)
    assert body.hold(b"x")
    tail = RequestBody(head(b"GET", content_length=None))
    assert not tail.hold_tail(b"ws-frame")
    assert tail.take_tail() == [b"ws-frame"] and tail.take_tail() == []
