"""The providers' HTTP client (``lean_http``): against the fakes, and against a raw asyncio server
of this file's own for what a well-behaved server never does (chunk splits, closed pooled
connections, half answers, huge heads, TLS it does or does not trust).

Waits here are bounded conditions ("until the server saw the close"), never timing asserts.
"""
from __future__ import annotations

import asyncio
import datetime
import gzip
import ipaddress
import json
import ssl
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from agentos.llm.errors import ConnectFailed, ErrorKind, LLMError
from agentos.llm.http import HttpClient, new_session
from agentos.llm.lean_http import MAX_HEAD, LeanSession
from agentos.llm.provider import make_provider
from agentos.llm.types import EmbeddingRequest, ModelRequest
from agentos.testing import FakeGemini, FakeOpenAI, text_reply

from .conftest import config_for

HELLO = ModelRequest(contents=[{"role": "user", "parts": [{"text": "hello"}]}])
HEADERS = {"Content-Type": "application/json", "x-goog-api-key": "k"}


# --- a raw server ---------------------------------------------------------------------------

class Peer:
    """One accepted connection, as the raw server's handler sees it."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer

    async def request(self) -> tuple[bytes, bytes] | None:
        """The next request's head and body; None when the client closed the connection."""
        try:
            head = await self.reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None
        length = 0
        for line in head.split(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return head, await self.reader.readexactly(length)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()


Handler = Callable[[Peer], Awaitable[object]]


class RawServer:
    """A TCP (or TLS) server on 127.0.0.1 that counts the connections it accepted, the requests
    it read and the connections the client closed."""

    def __init__(self, handler: Handler, ssl_context: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.ssl_context = ssl_context
        self.accepted = 0
        self.closed = 0
        self.requests: list[tuple[bytes, bytes]] = []
        self.hung_up = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, host: str = "127.0.0.1", path: str = "/v1/x") -> str:
        assert self._server is not None
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://{host}:{self._server.sockets[0].getsockname()[1]}{path}"

    async def __aenter__(self) -> RawServer:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, ssl=self.ssl_context)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        peer = Peer(reader, writer)
        original = peer.request

        async def recorded() -> tuple[bytes, bytes] | None:
            request = await original()
            if request is None:
                self.hung_up.set()
            else:
                self.requests.append(request)
            return request

        peer.request = recorded  # type: ignore[method-assign]
        try:
            await self.handler(peer)
        except (ConnectionError, ssl.SSLError):
            self.hung_up.set()
        finally:
            writer.close()
            self.closed += 1


def answer(body: bytes, *headers: str, status: str = "200 OK") -> bytes:
    head = "".join(f"{h}\r\n" for h in headers)
    return f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{head}\r\n".encode() + body


def chunked(*parts: bytes, status: str = "200 OK", headers: str = "") -> bytes:
    body = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in parts if p) + b"0\r\n\r\n"
    return f"HTTP/1.1 {status}\r\nTransfer-Encoding: chunked\r\n{headers}\r\n".encode() + body


async def keep_answering(peer: Peer) -> None:
    while await peer.request() is not None:
        await peer.send(answer(b'{"ok": true}', "Content-Type: application/json"))


async def with_client(test: Callable[[HttpClient], Awaitable[Any]], **config: Any) -> Any:
    settings = config_for("http://127.0.0.1:1", **config)
    async with new_session(settings) as session:
        return await test(HttpClient(session, settings, "gemini"))


def run(test: Callable[[HttpClient], Awaitable[Any]], **config: Any) -> Any:
    return asyncio.run(with_client(test, **config))


async def until(condition: Callable[[], bool]) -> None:
    """Wait (bounded) for a condition the server will reach."""
    async with asyncio.timeout(30):
        while not condition():
            await asyncio.sleep(0.01)


async def events(client: HttpClient, url: str) -> list[dict[str, Any]]:
    return [event async for event in client.post_events(url, {}, HEADERS)]


# --- against the fakes ----------------------------------------------------------------------

def test_the_kernels_session_carries_every_gemini_call() -> None:
    async def main() -> tuple[str, str, int, int, list[str]]:
        async with FakeGemini() as fake:
            fake.script(text_reply("one"), text_reply("two three", chunks=2))
            config = config_for(fake.url)
            async with new_session(config) as session:
                assert isinstance(session, LeanSession)
                provider = make_provider(config, session)
                plain = await provider.generate(HELLO)
                chunks: list[str] = []

                async def sink(delta: dict[str, Any]) -> None:
                    chunks.append(delta["text"])

                streamed = await provider.generate(HELLO, on_chunk=sink)
                counted = await provider.count_tokens(HELLO)
                vectors = await provider.embed(EmbeddingRequest(texts=("a", "b"), model="text-embedding-004"))
            return plain.text, streamed.text, counted, len(vectors.vectors), chunks

    plain, streamed, counted, vectors, chunks = asyncio.run(main())
    assert (plain, streamed, vectors) == ("one", "two three", 2)
    assert counted > 0 and "".join(chunks) == "two three" and len(chunks) == 2


def test_an_openai_stream_ends_at_done() -> None:
    async def main() -> tuple[str, list[str]]:
        async with FakeOpenAI() as fake:
            fake.script(text_reply("alpha beta gamma", chunks=3))
            config = config_for(fake.url + "/v1", provider="openai", model="gpt-test")
            async with new_session(config) as session:
                chunks: list[str] = []

                async def sink(delta: dict[str, Any]) -> None:
                    chunks.append(delta["text"])

                done = await make_provider(config, session).generate(HELLO, on_chunk=sink)
            return done.text, chunks

    text, chunks = asyncio.run(main())
    assert text == "alpha beta gamma" and "".join(chunks) == text


# --- the request, keep-alive and the pool ---------------------------------------------------

def test_requests_reuse_one_keep_alive_connection_and_send_a_complete_head() -> None:
    async def test(client: HttpClient) -> RawServer:
        async with RawServer(keep_answering) as server:
            for n in range(5):
                assert await client.post_json(server.url(), {"n": n}, HEADERS) == {"ok": True}
            assert await client.send_json("DELETE", server.url(path="/v1/c/1"), None, HEADERS) == {"ok": True}
        return server

    server = run(test)
    assert server.accepted == 1 and len(server.requests) == 6
    head, body = server.requests[0]
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/x HTTP/1.1"
    fields = {line.split(": ", 1)[0].lower(): line.split(": ", 1)[1] for line in lines[1:] if line}
    assert fields["host"].startswith("127.0.0.1:") and fields["x-goog-api-key"] == "k"
    assert fields["accept-encoding"] == "gzip, deflate" and fields["user-agent"] == "agentos-llm"
    assert fields["content-type"] == "application/json"
    assert json.loads(body) == {"n": 0} and int(fields["content-length"]) == len(body)
    delete_head, delete_body = server.requests[5]
    assert delete_head.startswith(b"DELETE /v1/c/1 HTTP/1.1\r\n") and delete_body == b""
    assert b"content-length" not in delete_head.lower()


def test_user_info_in_the_url_becomes_basic_auth() -> None:
    async def test(client: HttpClient) -> bytes:
        async with RawServer(keep_answering) as server:
            await client.post_json(server.url().replace("://", "://me:secret@"), {}, HEADERS)
        return server.requests[0][0]

    assert b"\r\nAuthorization: Basic bWU6c2VjcmV0\r\n" in run(test)


def test_a_connection_close_answer_is_not_pooled() -> None:
    async def handler(peer: Peer) -> None:
        if await peer.request() is not None:
            await peer.send(answer(b"{}", "Connection: close"))

    async def test(client: HttpClient) -> int:
        async with RawServer(handler) as server:
            for _ in range(3):
                assert await client.post_json(server.url(), {}, HEADERS) == {}
        return server.accepted

    assert run(test) == 3


def test_a_pooled_connection_the_server_closed_while_idle_is_replaced() -> None:
    async def handler(peer: Peer) -> None:
        # Answers as keep-alive, then closes the idle connection (a server's keep-alive timeout).
        if await peer.request() is not None:
            await peer.send(answer(b'{"n": 1}'))

    async def test(client: HttpClient) -> tuple[int, int]:
        async with RawServer(handler) as server:
            for wait in (True, False, True, False):
                assert await client.post_json(server.url(), {}, HEADERS) == {"n": 1}
                if wait:  # the close arrives while the connection idles in the pool
                    await until(lambda: server.closed == server.accepted)
                    await asyncio.sleep(0.05)
        return server.accepted, len(server.requests)

    accepted, requests = run(test)
    # Each call ran on its own connection and reached the server once, whether the client saw
    # the close while idle or only when it sent the next request on the dead connection.
    assert accepted == requests == 4


def test_a_reused_connection_that_ends_before_any_answer_is_retried_once() -> None:
    async def handler(peer: Peer) -> None:
        # The first request of a connection is answered; the second one is read and dropped.
        if await peer.request() is not None:
            await peer.send(answer(b'{"n": 1}'))
        await peer.request()

    async def test(client: HttpClient) -> tuple[LLMError, int, int]:
        async with RawServer(handler) as server:
            await client.post_json(server.url(), {}, HEADERS)
            assert await client.post_json(server.url(), {}, HEADERS) == {"n": 1}
            assert (server.accepted, len(server.requests)) == (2, 3)
            # Now a fresh connection that hangs up at once: an error, never a second try.
            server.handler = lambda peer: peer.request()
            with pytest.raises(LLMError) as caught:
                # The pooled connection (reused: retried once) and then a fresh one that fails.
                await client.post_json(server.url(), {}, HEADERS)
        return caught.value, server.accepted, len(server.requests)

    error, accepted, requests = run(test)
    assert error.kind is ErrorKind.UNAVAILABLE and error.retryable
    assert "closed the connection before the answer was complete" in error.message
    assert (accepted, requests) == (3, 5)


def test_a_fresh_connection_that_closes_without_an_answer_is_not_retried() -> None:
    async def test(client: HttpClient) -> tuple[LLMError, int]:
        async with RawServer(lambda peer: peer.request()) as server:
            with pytest.raises(LLMError) as caught:
                await client.post_json(server.url(), {}, HEADERS)
        return caught.value, server.accepted

    error, accepted = run(test)
    assert error.kind is ErrorKind.UNAVAILABLE and accepted == 1


def test_closing_the_session_closes_its_pooled_connections() -> None:
    async def main() -> bool:
        async with RawServer(keep_answering) as server:
            config = config_for(server.url())
            session = new_session(config)
            await HttpClient(session, config, "gemini").post_json(server.url(), {}, HEADERS)
            await session.close()
            await until(server.hung_up.is_set)
            return server.hung_up.is_set()

    assert asyncio.run(main())


# --- bodies ---------------------------------------------------------------------------------

def test_chunked_and_read_until_close_bodies() -> None:
    async def split_chunks(peer: Peer) -> None:
        while await peer.request() is not None:
            raw = chunked(b'{"a": ', b'[1, 2', b"]}")
            for i in range(0, len(raw), 7):  # chunk sizes and CRLFs split across reads
                await peer.send(raw[i:i + 7])

    async def until_close(peer: Peer) -> None:
        await peer.request()
        await peer.send(b'HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n{"b": ')
        await peer.send(b"true}")

    async def test(client: HttpClient) -> tuple[Any, Any, int]:
        async with RawServer(split_chunks) as server:
            first = await client.post_json(server.url(), {}, HEADERS)
            assert await client.post_json(server.url(), {}, HEADERS) == first
            reused = server.accepted
        async with RawServer(until_close) as server:
            second = await client.post_json(server.url(), {}, HEADERS)
        return first, second, reused

    assert run(test) == ({"a": [1, 2]}, {"b": True}, 1)


def test_gzip_and_deflate_answers_are_decoded_whole_and_streamed() -> None:
    events_raw = b"".join(b'data: {"i": %d}\r\n\r\n' % i for i in range(50))

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(answer(gzip.compress(b'{"zipped": 1}'), "Content-Encoding: gzip"))
        await peer.request()
        await peer.send(answer(zlib.compress(b'{"deflated": 2}'), "Content-Encoding: deflate"))
        await peer.request()
        packed = gzip.compress(events_raw)
        await peer.send(chunked(*[packed[i:i + 50] for i in range(0, len(packed), 50)],
                                headers="Content-Encoding: gzip\r\nContent-Type: text/event-stream\r\n"))
        await keep_answering(peer)

    async def test(client: HttpClient) -> tuple[Any, Any, list[dict[str, Any]]]:
        async with RawServer(handler) as server:
            return (await client.post_json(server.url(), {}, HEADERS),
                    await client.post_json(server.url(), {}, HEADERS),
                    await events(client, server.url()))

    zipped, deflated, streamed = run(test)
    assert zipped == {"zipped": 1} and deflated == {"deflated": 2}
    assert streamed == [{"i": i} for i in range(50)]


def test_an_error_status_carries_its_body_and_headers() -> None:
    body = json.dumps({"error": {"code": 429, "message": "slow down", "status": "RESOURCE_EXHAUSTED"}})

    async def handler(peer: Peer) -> None:
        while await peer.request() is not None:
            await peer.send(answer(body.encode(), "Retry-After: 7", status="429 Too Many Requests"))

    async def test(client: HttpClient) -> tuple[LLMError, LLMError, int]:
        async with RawServer(handler) as server:
            with pytest.raises(LLMError) as plain:
                await client.post_json(server.url(), {}, HEADERS)
            with pytest.raises(LLMError) as streamed:
                await events(client, server.url())
        return plain.value, streamed.value, server.accepted

    plain, streamed, accepted = run(test)
    for error in (plain, streamed):
        assert error.kind is ErrorKind.RATE_LIMITED and error.retry_after == 7
        assert "slow down" in error.message
    assert accepted == 1, "an error answer read whole leaves its connection reusable"


# --- broken answers -------------------------------------------------------------------------

def test_half_written_answers_fail_cleanly_and_their_connection_is_not_reused() -> None:
    async def handler(peer: Peer) -> None:
        request = await peer.request()
        assert request is not None
        if request[1] == b'{"cut":"length"}':
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b'{"half": ')
        elif request[1] == b'{"cut":"head"}':
            await peer.send(b"HTTP/1.1 200 OK\r\nContent-Le")
        else:
            raw = chunked(b'data: {"i": 1}\r\n\r\n', b'data: {"i": 2}\r\n\r\n')
            await peer.send(raw[:-20])

    async def test(client: HttpClient) -> tuple[list[LLMError], list[dict[str, Any]], int]:
        errors = []
        got: list[dict[str, Any]] = []
        async with RawServer(handler) as server:
            for cut in ("length", "head"):
                with pytest.raises(LLMError) as caught:
                    await client.post_json(server.url(), {"cut": cut}, HEADERS)
                errors.append(caught.value)
            with pytest.raises(LLMError) as caught:
                async for event in client.post_events(server.url(), {"cut": "stream"}, HEADERS):
                    got.append(event)
            errors.append(caught.value)
        return errors, got, server.accepted

    errors, got, accepted = run(test)
    for error in errors:
        assert error.kind is ErrorKind.UNAVAILABLE and error.retryable
        assert "closed the connection before the answer was complete" in error.message
    assert got == [{"i": 1}] and accepted == 3


def test_huge_headers_are_refused_and_the_connection_closed() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\n")
        for n in range(MAX_HEAD // 1000 + 2):
            await peer.send(b"X-Filler-%d: %b\r\n" % (n, b"x" * 1000))
        await peer.send(b"Content-Length: 2\r\n\r\n{}")
        await peer.request()

    async def test(client: HttpClient) -> tuple[LLMError, int]:
        async with RawServer(handler) as server:
            with pytest.raises(LLMError) as caught:
                await client.post_json(server.url(), {}, HEADERS)
            await until(server.hung_up.is_set)
        return caught.value, server.accepted

    error, accepted = run(test)
    assert error.kind is ErrorKind.UNAVAILABLE
    assert "status line and headers exceed 64 KiB" in error.message and accepted == 1


def test_a_malformed_status_line_is_unavailable() -> None:
    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"SPDY/9 banana\r\n\r\n")

    async def test(client: HttpClient) -> LLMError:
        async with RawServer(handler) as server:
            with pytest.raises(LLMError) as caught:
                await client.post_json(server.url(), {}, HEADERS)
        return caught.value

    error = run(test)
    assert error.kind is ErrorKind.UNAVAILABLE and "malformed HTTP answer" in error.message


# --- streams, timeouts, cancellation --------------------------------------------------------

def test_a_slow_stream_consumer_stops_the_socket_being_read_and_loses_nothing() -> None:
    event = b'data: {"pad": "' + b"x" * 4000 + b'"}\n\n'
    # 48 MiB: more than the socket buffers can take in (tcp_rmem's largest is often 32 MiB).
    total = 12_000
    written = [0]

    async def handler(peer: Peer) -> None:
        await peer.request()
        await peer.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        for _ in range(total):
            await peer.send(b"%x\r\n%b\r\n" % (len(event), event))
            written[0] += len(event)
        await peer.send(b"0\r\n\r\n")
        await keep_answering(peer)

    async def test(client: HttpClient) -> tuple[int, int, int]:
        async with RawServer(handler) as server:
            stream = client.post_events(server.url(), {}, HEADERS)
            count = 1 if await stream.__anext__() else 0
            # The consumer lags: the server's writes stall once the client stops reading.
            previous = -1
            while previous != written[0]:
                previous = written[0]
                await asyncio.sleep(0.2)
            stalled_at = written[0]
            async for _ in stream:
                count += 1
            await client.post_json(server.url(), {}, HEADERS)
        return stalled_at, count, server.accepted

    stalled_at, count, accepted = run(test)
    assert stalled_at < total * len(event)
    assert count == total and accepted == 1


def test_a_hung_endpoint_times_out_and_the_connection_is_closed() -> None:
    async def test(client: HttpClient) -> LLMError:
        async with RawServer(silent) as server:
            with pytest.raises(LLMError) as caught:
                await client.post_json(server.url(), {}, HEADERS)
            await until(server.hung_up.is_set)
        return caught.value

    async def silent(peer: Peer) -> None:
        await peer.request()
        await peer.request()

    error = run(test, timeout=0.3)
    assert error.kind is ErrorKind.TIMEOUT and "within the timeout" in error.message


def test_cancelling_a_call_closes_its_connection_at_once() -> None:
    async def slow_stream(peer: Peer) -> None:
        await peer.request()
        await peer.send(chunked(b'data: {"i": 1}\n\n')[:-5])
        await peer.request()

    async def silent(peer: Peer) -> None:
        await peer.request()
        await peer.request()

    async def test(client: HttpClient) -> tuple[bool, bool]:
        seen = []
        for handler, call in ((silent, lambda url: client.post_json(url, {}, HEADERS)),
                              (slow_stream, lambda url: events(client, url))):
            async with RawServer(handler) as server:
                task = asyncio.ensure_future(call(server.url()))
                await until(lambda: bool(server.requests))
                task.cancel()
                await asyncio.wait([task])
                await until(server.hung_up.is_set)
                seen.append(server.hung_up.is_set())
        return seen[0], seen[1]

    assert run(test) == (True, True)


# --- connecting -----------------------------------------------------------------------------

def test_connect_failures_are_connect_failed() -> None:
    async def test(client: HttpClient) -> list[LLMError]:
        errors = []
        server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        server.close()
        await server.wait_closed()
        for url in (f"http://127.0.0.1:{port}/x", "http://no-such-host.invalid/x"):
            with pytest.raises(LLMError) as caught:
                await client.post_json(url, {}, HEADERS)
            errors.append(caught.value)
        return errors

    refused, dns = run(test)
    assert isinstance(refused, ConnectFailed) and "connection refused" in refused.message
    assert isinstance(dns, ConnectFailed) and dns.reason == "connect_failed"


# --- TLS ------------------------------------------------------------------------------------

def _certificates(directory: Path) -> tuple[Path, ssl.SSLContext]:
    """A CA's certificate file and a server context whose certificate it signed (localhost,
    127.0.0.1)."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "agentos test CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - datetime.timedelta(days=1))
          .not_valid_after(now + datetime.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                       content_commitment=False, key_encipherment=False,
                                       data_encipherment=False, key_agreement=False,
                                       encipher_only=False, decipher_only=False), critical=True)
          .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
          .sign(ca_key, hashes.SHA256()))
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
            .issuer_name(ca_name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([
                x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                           critical=False)
            .sign(ca_key, hashes.SHA256()))
    ca_file = directory / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (directory / "server.pem").write_bytes(
        cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption()))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(directory / "server.pem")
    return ca_file, server


def test_tls_with_a_ca_trusted_through_ssl_cert_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ca_file, server_context = _certificates(tmp_path)
    names: list[str | None] = []
    server_context.sni_callback = lambda sock, name, ctx: names.append(name)
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)

    async def test(client: HttpClient) -> tuple[Any, list[dict[str, Any]], int]:
        async def handler(peer: Peer) -> None:
            await peer.request()
            await peer.send(answer(b'{"secure": true}'))
            await peer.request()
            await peer.send(chunked(b'data: {"i": 1}\n\n', b'data: {"i": 2}\n\n'))
            await keep_answering(peer)

        async with RawServer(handler, server_context) as server:
            plain = await client.post_json(server.url("localhost"), {}, HEADERS)
            streamed = await events(client, server.url("localhost"))
        return plain, streamed, server.accepted

    assert run(test) == ({"secure": True}, [{"i": 1}, {"i": 2}], 1)
    assert names == ["localhost"], "the host name travels as SNI"


def test_tls_refuses_a_certificate_it_does_not_trust(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    _, server_context = _certificates(tmp_path)
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)

    async def test(client: HttpClient) -> tuple[LLMError, int]:
        async with RawServer(keep_answering, server_context) as server:
            with pytest.raises(LLMError) as caught:
                await client.post_json(server.url("localhost"), {}, HEADERS)
        return caught.value, len(server.requests)

    error, requests = run(test)
    assert isinstance(error, ConnectFailed) and "certificate verify failed" in error.message
    assert requests == 0, "nothing is sent to a server whose certificate failed"

