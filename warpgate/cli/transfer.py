"""``warpgate send FILE NAME|ADDRFILE`` / ``warpgate receive``: one file over an
authenticated link, with a progress bar and a verified SHA-256.

The sender sends a header (name, size, SHA-256 of the file), the data, then an end
marker.  The receiver writes ``NAME.part``, hashes what arrived, and only when size and
hash match renames it into place and acknowledges; otherwise it deletes the part file
and both sides exit non-zero.  Message type bytes: ``h`` header (JSON), ``d`` data,
``e`` end, ``k`` acknowledgement (JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
import hashlib
import json
import os
import sys
import time
from pathlib import Path
from typing import BinaryIO

from warpgate.cli.peer_options import (
    CommandError,
    accept_one,
    add_common,
    add_target,
    connect_to_target,
    quiet_logs,
    run_command,
    started_gate,
    status,
)
from warpgate.link.link import Link, LinkClosed

HEADER, DATA, END, ACK = b"h", b"d", b"e", b"k"
CHUNK = 256 * 1024
ACK_TIMEOUT = 60.0
RECV_QUEUE_LIMIT = 300  # more than a link queues for recv()


def add_parser(commands: argparse._SubParsersAction) -> None:
    send = commands.add_parser(
        "send",
        help="send a file to a peer running 'warpgate receive' (checksum verified)",
        description="Send FILE to a peer running 'warpgate receive', by nickname or address file.",
    )
    send.add_argument("file", type=Path, help="the file to send")
    add_target(send, "send")
    send.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(send, serving=False)
    send.set_defaults(func=cmd_send)

    receive = commands.add_parser(
        "receive",
        help="receive one file from 'warpgate send' (checksum verified)",
        description=(
            "Wait for one 'warpgate send', write the file (into --output, a directory "
            "or a file name; default the current directory) and verify its SHA-256."
        ),
    )
    receive.add_argument("--name", help="nickname to register (and keystore identity)")
    receive.add_argument("--output", "-o", type=Path, default=Path("."), help="where to write")
    receive.add_argument("--force", action="store_true", help="overwrite an existing file")
    receive.add_argument("--quiet", action="store_true", help="no progress bar")
    add_common(receive, serving=True)
    receive.set_defaults(func=cmd_receive)


def cmd_send(args: argparse.Namespace) -> int:
    quiet_logs(args)
    path: Path = args.file
    try:
        if not path.is_file():
            raise CommandError(f"no such file: {path}", "check the path")
        try:
            # Hashed before connecting: the header carries the checksum.
            args.size, args.digest = path.stat().st_size, _hash_file(path)
        except OSError as exc:
            raise CommandError(f"cannot read {path}: {exc.strerror or exc}") from None
    except CommandError as exc:
        print(exc.line("send"), file=sys.stderr, flush=True)
        return 1
    return run_command(_send(args), "send")


def cmd_receive(args: argparse.Namespace) -> int:
    quiet_logs(args)
    out: Path = args.output
    if not out.is_dir() and not out.parent.is_dir():
        # Before any node starts: a sender would otherwise find out only at the end.
        print(
            CommandError(f"no such directory: {out.parent}", "create it, or another -o").line(
                "receive"
            ),
            file=sys.stderr,
            flush=True,
        )
        return 1
    return run_command(_receive(args), "receive")


class Progress:
    """A progress bar on stderr when it is a terminal; one final line otherwise."""

    def __init__(self, total: int, label: str, *, quiet: bool = False) -> None:
        self.total, self.label = total, label
        self.done = 0
        self.began = time.monotonic()
        self.live = not quiet and sys.stderr.isatty()
        self._drawn = 0.0

    def advance(self, n: int) -> None:
        self.done += n
        now = time.monotonic()
        if self.live and (now - self._drawn >= 0.1 or self.done >= self.total):
            self._drawn = now
            frac = self.done / self.total if self.total else 1.0
            bar = "#" * int(frac * 30)
            sys.stderr.write(
                f"\r{self.label} [{bar:<30}] {frac * 100:5.1f}% "
                f"{_size(self.done)}/{_size(self.total)} {_size(self.rate())}/s"
            )
            sys.stderr.flush()

    def rate(self) -> float:
        return self.done / max(time.monotonic() - self.began, 1e-6)

    def finish(self) -> None:
        if self.live:
            sys.stderr.write("\n")
            sys.stderr.flush()


def _size(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def _hash_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


async def _send(args: argparse.Namespace) -> int:
    path: Path = args.file
    size, digest = args.size, args.digest
    async with started_gate(args, args.identity) as gate:
        link = await connect_to_target(gate, args)
        try:
            header = {"name": path.name, "size": size, "sha256": digest}
            await link.send(HEADER + json.dumps(header).encode())
            progress = Progress(size, f"sending {path.name}", quiet=args.quiet)
            with path.open("rb") as f:
                while chunk := f.read(CHUNK):
                    await link.send(DATA + chunk)
                    progress.advance(len(chunk))
            await link.send(END)
            progress.finish()
            ack = await link.recv(timeout=ACK_TIMEOUT)
        except (LinkClosed, OSError, TimeoutError) as exc:
            # A receiver that refuses the file says why, then hangs up while we are
            # still sending: its answer is already here, and it is the better news.
            pending = await _pending_answer(link)
            if pending is None:
                raise CommandError(
                    f"the transfer broke off: {exc or type(exc).__name__}", "send it again"
                ) from None
            ack = pending
        finally:
            await link.close()
    answer = _decode(ack, ACK)
    if not answer.get("ok"):
        raise CommandError(
            f"the receiver refused the file: {answer.get('error', 'no reason given')}",
            "send it again",
        )
    status(f"sent {path.name}: {_size(size)}, sha256 {digest} verified by the receiver")
    return 0


async def _pending_answer(link: Link) -> bytes | None:
    """An acknowledgement that arrived before the link closed, if any."""
    for _ in range(RECV_QUEUE_LIMIT):  # bounded: drop data the peer sent meanwhile
        try:
            msg = await link.recv(timeout=0.5)
        except (LinkClosed, TimeoutError):
            return None
        if msg[:1] == ACK:
            return msg
    return None


def _decode(msg: bytes, kind: bytes) -> dict[str, object]:
    try:
        if msg[:1] != kind:
            raise ValueError(f"expected a {kind!r} message, got {msg[:1]!r}")
        data = json.loads(msg[1:])
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except ValueError as exc:
        raise CommandError(f"the peer does not speak this protocol: {exc}") from None


def _target_path(output: Path, name: object) -> Path:
    if not isinstance(name, str) or not name:
        raise CommandError("the sender gave no file name")
    # Never let the sender choose where the file lands: its base name only.
    base = Path(name.replace("\\", "/")).name
    if base in ("", ".", ".."):
        raise CommandError(f"the sender's file name {name!r} is not usable")
    if base.startswith("."):
        # A dotfile (.profile, .bash_aliases) in a home directory is code at next login.
        raise CommandError(
            f"the sender's file name {name!r} is a hidden file; not written",
            "--output NAME to choose the name yourself",
        )
    return output / base if output.is_dir() else output


async def _receive(args: argparse.Namespace) -> int:
    identity = args.name or "receive"
    async with started_gate(args, identity, register=args.name) as gate:
        link = await accept_one(
            gate, args, doing="waiting for a file", who="senders", peer_command="send FILE"
        )
        try:
            return await _receive_on(link, args)
        finally:
            await link.close()


async def _receive_on(link: Link, args: argparse.Namespace) -> int:
    try:
        header = _decode(await link.recv(timeout=ACK_TIMEOUT), HEADER)
    except (LinkClosed, TimeoutError) as exc:
        raise CommandError(f"the sender sent no file: {exc or 'timed out'}") from None
    target = _target_path(args.output, header.get("name"))
    size, want = header.get("size"), header.get("sha256")
    if not isinstance(size, int) or size < 0 or not isinstance(want, str):
        raise CommandError("the sender's header is malformed")
    if target.exists() and not args.force:
        await _ack(link, False, "file exists")
        # Read what is already on its way before hanging up: closing a socket with
        # unread data resets the connection, and the reset can destroy our answer
        # before the sender reads it.
        await _drain(link)
        raise CommandError(f"{target} exists", "--force to overwrite, or --output elsewhere")
    part = target.with_name(target.name + ".part")
    digest = hashlib.sha256()
    got = 0
    progress = Progress(size, f"receiving {target.name}", quiet=args.quiet)
    ok = False
    try:
        try:
            # Never through a symlink someone planted, never over a file it did not make.
            flags = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_NOFOLLOW", 0)
            if part.is_symlink():
                raise OSError(errno.ELOOP, "the .part file is a symbolic link")
            f = os.fdopen(os.open(part, flags, 0o600), "wb")
        except OSError as exc:
            await _ack(link, False, "the receiver cannot write the file")
            await _drain(link)
            raise CommandError(
                f"cannot write {part}: {exc.strerror or exc}", "another -o, or free some space"
            ) from None
        with f:
            try:
                ok = await _copy(link, f, digest, progress, size)
            except OSError as exc:  # the disk filled up, say
                await _ack(link, False, "the receiver could not write the file")
                raise CommandError(
                    f"cannot write {part}: {exc.strerror or exc}; nothing was kept",
                    "free some space, or another -o",
                ) from None
            got = progress.done
        progress.finish()
        error = ""
        if not ok:
            error = "the sender stopped before the end"
        elif got != size:
            error = f"size mismatch: got {got} bytes, expected {size}"
        elif digest.hexdigest() != want:
            error = "checksum mismatch: the file is corrupt"
        if error:
            await _ack(link, False, error)
            raise CommandError(f"{target.name}: {error}; nothing was kept", "send it again")
        os.replace(part, target)
        await _ack(link, True, "")
    finally:
        part.unlink(missing_ok=True)
    status(
        f"received {target}: {_size(size)}, sha256 {want} verified, "
        f"from the node with key {link.remote_key.hex()}"
    )
    return 0


async def _copy(
    link: Link, f: BinaryIO, digest: hashlib._Hash, progress: Progress, size: int
) -> bool:
    while True:
        try:
            msg = await link.recv()
        except LinkClosed:
            return False
        kind = msg[:1]
        if kind == END:
            return True
        if kind != DATA:
            return False
        body = msg[1:]
        if progress.done + len(body) > size:
            return False  # more than announced: refuse rather than fill the disk
        f.write(body)
        digest.update(body)
        progress.advance(len(body))


async def _drain(link: Link, limit: float = 10.0) -> None:
    """Discard the sender's messages until its end marker, the link closing, or
    ``limit`` seconds."""
    with contextlib.suppress(LinkClosed, TimeoutError):
        async with asyncio.timeout(limit):
            while (await link.recv())[:1] != END:
                pass


async def _ack(link: Link, ok: bool, error: str) -> None:
    try:
        await link.send(ACK + json.dumps({"ok": ok, "error": error}).encode())
    except (LinkClosed, OSError):
        pass
