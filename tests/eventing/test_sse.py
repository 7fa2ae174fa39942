"""SSE framing shared by every reader of job event streams."""

import asyncio

from eventing.sse import SseFrame, aparse_lines, parse_lines

BODY = [
    ": heartbeat",
    "id: 1",
    "event: job_started",
    'data: {"seq": 1}',
    "",
    "id: 2",
    "data: line one",
    "data: line two",
    "",
    "id: 3",
    "event: text_delta",
    'data: {"seq": 3',  # cut off by a dropped connection: no blank line follows
]


def test_complete_frames_only_with_comments_reported():
    comments: list[str] = []
    frames = list(parse_lines(BODY, comments.append))
    assert frames == [
        SseFrame("1", "job_started", '{"seq": 1}'),
        SseFrame("2", "message", "line one\nline two"),
    ]
    assert comments == ["heartbeat"]


def test_async_reader_gives_the_same_frames():
    async def lines():
        for line in BODY:
            yield line

    async def collect():
        return [frame async for frame in aparse_lines(lines())]

    assert asyncio.run(collect()) == list(parse_lines(BODY))
