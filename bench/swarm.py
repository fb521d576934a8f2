"""A swarm of simulated traps: N MQTT 5 connections from one asyncio process.

Each trap is its own MQTT client (client id = device id, a Last Will `offline`, a retained
`online` status, QoS 1 with at most `window` unacknowledged messages as the agent's publisher),
speaking the protocol directly over a socket: a thousand paho clients would need a thousand
threads, and the swarm must leave the two cores to the broker, ingest and the database.

A swarm runs one phase and reports through a multiprocessing queue:
- `steady`: connect, publish at field-like rates for some seconds (detections, a sequence
  summary every third frame, heartbeats at QoS 0), wait for every acknowledgement, report, then
  idle until it is killed: SIGKILL of the swarm process is the outage (every trap's connection
  dies at once and the broker publishes their Last Wills).
- `storm`: reconnect and flush a backlog per trap as fast as the window allows (a day offline).

Message ids are `<device>:<phase><n>`; `model.version` names the phase, `processed_at` is the
moment of publishing (the benchmark measures publish-to-row delay from it).
"""

from __future__ import annotations

import asyncio
import random
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from multiprocessing.queues import Queue
from typing import Any

from trapline.cli.broker import die_with_parent

CONNECT, CONNACK, PUBLISH, PUBACK, DISCONNECT = 0x10, 0x20, 0x30, 0x40, 0xE0


def device_name(index: int) -> str:
    return f"fleet-{index:04d}"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value % 128, value // 128
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _utf8(text: str | bytes) -> bytes:
    data = text.encode() if isinstance(text, str) else text
    return struct.pack("!H", len(data)) + data


def connect_packet(client_id: str, will_topic: str, will_payload: bytes) -> bytes:
    # MQTT 5: clean start, will at QoS 1 retained, keep-alive off (the swarm is never idle long)
    flags = 0x02 | 0x04 | 0x08 | 0x20
    header = _utf8("MQTT") + bytes([5, flags]) + struct.pack("!H", 0) + _varint(0)
    payload = _utf8(client_id) + _varint(0) + _utf8(will_topic) + _utf8(will_payload)
    body = header + payload
    return bytes([CONNECT]) + _varint(len(body)) + body


def publish_packet(topic: bytes, payload: bytes, qos: int, packet_id: int, retain: bool = False) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", packet_id)
    body += b"\x00" + payload  # no properties
    return bytes([PUBLISH | (qos << 1) | int(retain)]) + _varint(len(body)) + body


def _iso(ts: datetime) -> str:
    return ts.isoformat(timespec="milliseconds")


def detection(device: str, ident: str, sequence: str, frame: int, captured: datetime, phase: str) -> bytes:
    boxes = ",".join(
        f'{{"category":"animal","conf":0.{80 + k},"bbox":[0.1,0.{2 + k},0.3,0.4]}}' for k in range(frame % 3)
    )
    return (
        f'{{"schema":"trapline.detections/1","id":"{device}:{ident}","device_id":"{device}",'
        f'"captured_at":"{_iso(captured)}","processed_at":"{_iso(datetime.now(UTC))}",'
        f'"sequence_id":"{device}:{sequence}","frame_index":{frame},"image":{{"file":"DCIM/{ident}.JPG",'
        f'"sha256":"{"a" * 64}","width":2048,"height":1536,"night":false}},"model":{{"name":"trapline-nano",'
        f'"version":"{phase}","sha256":"{"b" * 64}"}},"inference_ms":15.0,"detections":[{boxes}]}}'
    ).encode()


def sequence_summary(device: str, sequence: str, first: datetime, last: datetime) -> bytes:
    return (
        f'{{"schema":"trapline.sequences/1","sequence_id":"{device}:{sequence}","device_id":"{device}",'
        f'"first_frame_at":"{_iso(first)}","last_frame_at":"{_iso(last)}","frame_count":3,'
        f'"categories":{{"animal":{{"max_count":2,"best_conf":0.81}}}},'
        f'"mean_class_probabilities":{{"animal":0.81}}}}'
    ).encode()


def heartbeat(uptime_s: float, frames: int) -> bytes:
    return (
        f'{{"schema":"trapline.heartbeat/1","ts":"{_iso(datetime.now(UTC))}","uptime_s":{uptime_s:.1f},'
        f'"frames_processed":{frames},"frames_quarantined":0,"spool_depth":0,"spool_bytes":0,'
        f'"dropped":0,"cpu_temp_c":48.5}}'
    ).encode()


def status(state: str) -> bytes:
    return f'{{"state":"{state}","ts":"{_iso(datetime.now(UTC))}","agent_version":"bench"}}'.encode()


@dataclass(frozen=True)
class SwarmSpec:
    mode: str  # steady / storm
    port: int
    first: int  # traps first .. first + count - 1
    count: int
    phase: str  # letter in message ids and model.version
    seconds: float = 0.0  # steady: how long
    frame_every_s: float = 10.0  # steady: one frame per trap this often (on average)
    heartbeat_every_s: float = 60.0
    backlog: int = 0  # storm: messages per trap (three frames, then their summary, and so on)
    window: int = 100  # unacknowledged QoS 1 messages per trap (the agent's max_inflight)


@dataclass
class SwarmReport:
    phase: str
    frames: int = 0  # QoS 1 detections acknowledged by the broker
    sequences: int = 0
    heartbeats: int = 0
    boxes: int = 0
    connected_at: float = 0.0
    started_at: float = 0.0
    published_at: float = 0.0  # every QoS 1 message acknowledged
    errors: list[str] = field(default_factory=list)


class TrapLink:
    """One trap's MQTT connection: publish with a window of unacknowledged messages."""

    def __init__(self, device: str, port: int, window: int) -> None:
        self.device = device
        self.port = port
        self.prefix = f"trapline/{device}/".encode()
        self.window = asyncio.Semaphore(window)
        self.inflight: set[int] = set()
        self.next_id = 0
        self.idle = asyncio.Event()
        self.idle.set()
        self.writer: asyncio.StreamWriter | None = None
        self.reader_task: asyncio.Task[None] | None = None

    async def connect(self) -> None:
        reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port, limit=1 << 16)
        self.writer.write(connect_packet(self.device, f"trapline/{self.device}/status", status("offline")))
        head = await reader.readexactly(2)
        ack = await reader.readexactly(head[1])
        if head[0] != CONNACK or ack[1] != 0:
            raise ConnectionError(f"{self.device}: broker refused the connection ({ack[1]:#x})")
        self.reader_task = asyncio.create_task(self._read_acks(reader))

    async def _read_acks(self, reader: asyncio.StreamReader) -> None:
        while True:
            head = await reader.readexactly(1)
            length, shift = 0, 0
            while True:
                byte = (await reader.readexactly(1))[0]
                length |= (byte & 0x7F) << shift
                shift += 7
                if not byte & 0x80:
                    break
            body = await reader.readexactly(length)
            if head[0] & 0xF0 == PUBACK:
                packet_id = struct.unpack("!H", body[:2])[0]
                if len(body) > 2 and body[2] >= 0x80:
                    raise ConnectionError(f"{self.device}: PUBACK reason {body[2]:#x}")
                self.inflight.discard(packet_id)
                self.window.release()
                if not self.inflight:
                    self.idle.set()

    async def publish(
        self, kind: str, payload: bytes | Callable[[], bytes], qos: int = 1, retain: bool = False
    ) -> None:
        """Send when the window has room; a callable payload is built only then (its
        processed_at is the moment of sending, not of waiting for room)."""
        if self.writer is None:
            raise ConnectionError(f"{self.device} is not connected")
        if qos == 0:
            data = payload() if callable(payload) else payload
            self.writer.write(publish_packet(self.prefix + kind.encode(), data, 0, 0, retain))
            return
        await self.window.acquire()
        payload = payload() if callable(payload) else payload
        self.next_id = self.next_id % 65535 + 1
        self.inflight.add(self.next_id)
        self.idle.clear()
        self.writer.write(publish_packet(self.prefix + kind.encode(), payload, 1, self.next_id, retain))
        if self.writer.transport.get_write_buffer_size() > 1 << 20:
            await self.writer.drain()

    async def acknowledged(self) -> None:
        await self.idle.wait()

    async def disconnect(self) -> None:
        if self.writer is not None:
            self.writer.write(bytes([DISCONNECT, 0]))
            await self.writer.drain()
            self.writer.close()
        if self.reader_task is not None:
            self.reader_task.cancel()


async def _steady(link: TrapLink, spec: SwarmSpec, report: SwarmReport, rng: random.Random) -> None:
    if spec.seconds <= 0:
        return
    device, started, frame = link.device, time.monotonic(), 0
    next_beat = started + rng.uniform(0, spec.heartbeat_every_s)
    end = started + spec.seconds
    await asyncio.sleep(rng.uniform(0, min(spec.frame_every_s, spec.seconds)))  # traps are not in step
    while time.monotonic() < end:
        now = datetime.now(UTC)
        sequence = f"seq-{spec.phase}{frame // 3:07d}"
        ident = f"{spec.phase}{frame:08d}"
        await link.publish(
            "detections", partial(detection, device, ident, sequence, frame % 3, now, spec.phase)
        )
        report.frames += 1
        report.boxes += frame % 3
        if frame % 3 == 2:
            await link.publish(
                "sequences", sequence_summary(device, sequence, now - timedelta(seconds=2), now)
            )
            report.sequences += 1
        frame += 1
        if time.monotonic() >= next_beat:
            await link.publish("heartbeat", heartbeat(time.monotonic() - started, frame), qos=0)
            report.heartbeats += 1
            next_beat += spec.heartbeat_every_s
        await asyncio.sleep(min(rng.expovariate(1 / spec.frame_every_s), max(0.0, end - time.monotonic())))


def storm_frames(backlog: int) -> int:
    """Frames among `backlog` messages: three frames, then their sequence summary, and so on."""
    return backlog - backlog // 4


async def _storm(link: TrapLink, spec: SwarmSpec, report: SwarmReport) -> None:
    device = link.device
    frames = storm_frames(spec.backlog)
    start = datetime.now(UTC) - timedelta(days=1)  # a day's backlog, frames spread over it
    step = timedelta(days=1) / max(1, frames)
    for frame in range(frames):
        captured = start + frame * step
        sequence = f"seq-{spec.phase}{frame // 3:07d}"
        ident = f"{spec.phase}{frame:08d}"
        frame_message = partial(detection, device, ident, sequence, frame % 3, captured, spec.phase)
        await link.publish("detections", frame_message)
        report.frames += 1
        report.boxes += frame % 3
        if frame % 3 == 2:
            await link.publish("sequences", sequence_summary(device, sequence, captured - 2 * step, captured))
            report.sequences += 1


async def _run(spec: SwarmSpec, queue: Queue[Any]) -> None:
    report = SwarmReport(spec.phase)
    links = [
        TrapLink(device_name(i), spec.port, spec.window) for i in range(spec.first, spec.first + spec.count)
    ]
    # connect in waves: a thousand SYNs at once overflow the listen backlog
    for start in range(0, len(links), 100):
        await asyncio.gather(*(link.connect() for link in links[start : start + 100]))
    for link in links:
        await link.publish("status", status("online"), retain=True)
    await asyncio.gather(*(link.acknowledged() for link in links))
    report.connected_at = report.started_at = time.time()
    rng = random.Random(spec.first)
    if spec.mode == "steady":
        await asyncio.gather(*(_steady(link, spec, report, random.Random(rng.random())) for link in links))
    else:
        await asyncio.gather(*(_storm(link, spec, report) for link in links))
    await asyncio.gather(*(link.acknowledged() for link in links))
    report.published_at = time.time()
    queue.put(report)
    if spec.mode == "steady":
        await asyncio.sleep(3600)  # the outage: the benchmark kills this process
    for link in links:
        await link.publish("status", status("stopped"), retain=True)
    await asyncio.gather(*(link.acknowledged() for link in links))
    await asyncio.gather(*(link.disconnect() for link in links))


def run_swarm(spec: SwarmSpec, queue: Queue[Any]) -> None:
    """Entry point of a swarm process."""
    die_with_parent()  # an interrupted benchmark leaves no swarm behind
    try:
        asyncio.run(_run(spec, queue))
    except Exception as exc:  # reported, so the benchmark fails loudly instead of waiting
        queue.put(SwarmReport(spec.phase, errors=[f"{type(exc).__name__}: {exc}"]))
        raise
