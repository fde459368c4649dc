"""Server-Sent Events framing, as both providers stream it.

Gemini ends lines with CRLF, OpenAI-compatible servers with LF; the spec also
allows a lone CR, so all three are accepted. A block of raw JSON without a
``data:`` prefix (how Gemini may report a mid-stream error) is passed through
as data too.
"""
from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator


class SSEDecoder:
    """Feed bytes, get the data of each complete event."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, chunk: bytes) -> list[str]:
        data = self._buffer + chunk
        # A CR at the very end may be the first half of a CRLF split across chunks.
        hold = b""
        if data.endswith(b"\r"):
            data, hold = data[:-1], b"\r"
        data = data.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        blocks = data.split(b"\n\n")
        self._buffer = blocks.pop() + hold
        return [event for event in map(_event_data, blocks) if event is not None]

    def finish(self) -> list[str]:
        """Data of a last event the server did not terminate with a blank line."""
        rest = self._buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        self._buffer = b""
        event = _event_data(rest.strip(b"\n"))
        return [event] if event is not None else []


def _event_data(block: bytes) -> str | None:
    lines = block.decode("utf-8", errors="replace").split("\n")
    data: list[str] = []
    raw: list[str] = []
    for line in lines:
        if line.startswith("data:"):
            value = line[5:]
            data.append(value.removeprefix(" "))
        elif line.startswith((":", "event:", "id:", "retry:")):
            continue
        elif line.strip():
            raw.append(line)
    if data:
        return "\n".join(data)
    if raw and raw[0].lstrip().startswith(("{", "[")):
        return "\n".join(raw)
    return None


async def sse_events(chunks: AsyncIterable[bytes]) -> AsyncIterator[str]:
    """The data of every event in a byte stream, including an unterminated last one."""
    decoder = SSEDecoder()
    async for chunk in chunks:
        for event in decoder.feed(chunk):
            yield event
    for event in decoder.finish():
        yield event
