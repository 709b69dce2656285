"""Server-Sent Events as `GET /v1/jobs/{id}/events` sends them, read line by line."""

from __future__ import annotations

from visionq.client.sse import Event, parse


def test_events_end_at_blank_lines_and_join_their_data_lines() -> None:
    lines = ["event: job", 'data: {"a":', "data: 1}", "", "data:plain", "id: 7", "retry: 10", ""]

    assert list(parse(lines)) == [Event("job", '{"a":\n1}'), Event("message", "plain")]


def test_a_keep_alive_comment_yields_none_so_the_reader_can_look_at_its_clock() -> None:
    lines = [": keep-alive", "event: job", "data: x", "", ":"]

    assert list(parse(lines)) == [None, Event("job", "x"), None]


def test_an_event_cut_off_before_its_blank_line_is_dropped() -> None:
    assert list(parse(["event: job", "data: {}", "", "event: job", 'data: {"cut'])) == [Event("job", "{}")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert list(parse(["", "event: job", "", ""])) == []
