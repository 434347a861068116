"""The node logic on real MicroPython: outages, reboots and a full buffer against the in-memory board (memhal).

Run by tests/firmware/test_micropython.py through tools/micropython/run.mjs, with the board modules under
/lib/pzone_firmware. Every scenario asserts here, in MicroPython; the last line printed is a JSON summary that the
test asserts on again (and feeds the delivered payloads to the ingest's parser). ``--lose-a-reading`` makes the
buffer drop one reading silently, to show that a loss fails the run.
"""

import json
import os
import sys

from memhal import Board, Broker

from pzone_firmware.delivery import OfflineBuffer
from pzone_firmware.wire import STATUS_OFFLINE, STATUS_ONLINE

BROKERS = []  # every scenario's, for the contract check of all acknowledged publishes


def new_broker():
    broker = Broker()
    BROKERS.append(broker)
    return broker


# The v1 payload (pzone.telemetry): the required fields, and every field it may have.
REQUIRED = ("v", "device_id", "seq", "ax", "ay", "az")
FIELDS = ("v", "device_id", "seq", "ts", "ax", "ay", "az", "battery", "epoch")


def seqs(broker, node):
    return [json.loads(msg)["seq"] for msg in broker.payloads(node.tilt_topic)]


def buffered(node):
    return [item[0] for item in node.buffer.items()]


def drain(node, max_steps=50):
    """Run the node until it is connected with nothing left to send (the broker must be back)."""
    node.run(until=lambda: node.connected and len(node.buffer) == 0, max_steps=max_steps)
    assert node.connected and len(node.buffer) == 0, "not drained: " + repr(node.stats())


def away_and_back():
    broker = new_broker()
    board = Board(broker, "mp-away")
    node = board.boot()
    node.run(max_steps=3)
    assert node.published == 3, repr(node.stats())

    broker.away()
    node.run(max_steps=10)
    assert not node.connected and node.published == 3, repr(node.stats())
    assert buffered(node) == list(range(3, 13)), buffered(node)
    assert node.connect_failures >= 1 and node.buffer_drops == 0, repr(node.stats())
    broker.back()
    drain(node)  # a reconnect due after the next sample takes that reading along
    assert node.published == node.readings >= 13, repr(node.stats())

    # Away again, and back only long enough for 'online' and two readings: it leaves in the middle of a flush.
    broker.away()
    node.run(max_steps=6)
    broker.back(acks_before_away=3)
    node.run(max_steps=2)
    assert not node.connected and len(node.buffer) > 0, repr(node.stats())
    broker.back()
    drain(node)
    assert node.shutdown()

    delivered = seqs(broker, node)
    assert delivered == list(range(node.readings)), delivered
    stats = node.stats()
    assert stats["published"] == stats["readings"] >= 21 and stats["buffer_drops"] == 0, repr(stats)
    assert stats["reconnects"] >= 2 and stats["connect_failures"] >= 2, repr(stats)
    assert broker.payloads(node.status_topic)[0] == STATUS_ONLINE
    assert broker.retained[node.status_topic] == STATUS_OFFLINE  # the clean shutdown said so
    assert board.clock.elapsed_ms > 3000  # the ticks wrapped around during the run
    assert board.wifi.joins == 1  # an MQTT reconnect does not rejoin a working Wi-Fi
    return {"seqs": delivered, "stats": stats}


def reboot_mid_block():
    broker = new_broker()
    board = Board(broker, "mp-reboot", seq_block=8)
    first = board.boot()
    first.run(max_steps=5)  # 0..4 from the block 0..7
    epoch = first.lease.epoch
    board.power_cut()

    second = board.boot()
    assert second.lease.next_seq == 8, second.lease.next_seq  # the rest of the block is a gap, never reused
    second.run(max_steps=10)  # 8..17
    broker.away()
    second.run(max_steps=3)  # 18..20 wait in RAM and die with it
    lost = buffered(second)
    assert lost == [18, 19, 20], lost
    board.power_cut()

    broker.back()
    third = board.boot()
    assert third.lease.next_seq == 24, third.lease.next_seq
    third.run(max_steps=2)
    assert third.shutdown()

    delivered = seqs(broker, third)
    expected = list(range(5))  # no [*a, *b] on MicroPython: starred items in a display are a SyntaxError
    expected.extend(range(8, 18))
    expected.extend([24, 25])
    assert delivered == expected, delivered
    issued = delivered + lost
    assert len(set(issued)) == len(issued)
    epochs = [json.loads(msg).get("epoch", 0) for msg in broker.payloads(third.tilt_topic)]
    assert epochs == [epoch] * len(delivered), epochs  # same flash: same epoch
    assert broker.wills_fired == 1  # the first power cut, while connected
    assert board.wifi.joins == 3  # once per boot
    return {"seqs": delivered, "lost": lost, "stats": third.stats()}


def reflash():
    broker = new_broker()
    board = Board(broker, "mp-reflash")
    first = board.boot()
    first.run(max_steps=3)
    board.power_cut()
    board.storage.wipe()
    second = board.boot()
    second.run(max_steps=3)
    assert second.shutdown()
    keys = []
    for msg in broker.payloads(second.tilt_topic):
        body = json.loads(msg)
        keys.append((body.get("epoch", 0), body["seq"]))
    assert [k[1] for k in keys] == [0, 1, 2, 0, 1, 2], keys  # counting starts again on an empty flash ...
    assert len(set(keys)) == len(keys), keys  # ... under a new epoch, so no reading's key repeats
    return {"keys": [list(k) for k in keys]}


def full_buffer():
    broker = new_broker()
    broker.away()
    board = Board(broker, "mp-full", buffer_size=4)
    node = board.boot()
    node.run(max_steps=10)
    assert node.connects == 0 and node.readings == 10, repr(node.stats())
    assert buffered(node) == [6, 7, 8, 9], buffered(node)
    assert node.stats()["buffer_drops"] == 6, repr(node.stats())
    broker.back()
    assert node.shutdown(60000)  # delivers what is buffered without taking another reading
    delivered = seqs(broker, node)
    assert delivered == [6, 7, 8, 9], delivered
    return {"seqs": delivered, "stats": node.stats()}


def board_flash():
    """The board's FlashStorage (hal_micropython) on MicroPython's own file API, across a reboot."""

    class NoHardware:
        """machine and network: hal_micropython imports them, and only board_hal() touches them."""

    sys.modules["machine"] = NoHardware()
    sys.modules["network"] = NoHardware()
    from pzone_firmware.hal_micropython import FlashStorage

    os.mkdir("/flash")
    board = Board(new_broker(), "mp-flash", seq_block=8)
    first = board.boot(FlashStorage("/flash"))
    first.run(max_steps=3)
    board.power_cut()
    second = board.boot(FlashStorage("/flash"))
    assert second.lease.next_seq == 8 and second.lease.epoch == first.lease.epoch
    second.run(max_steps=1)
    assert second.shutdown()
    delivered = seqs(board.broker, second)
    assert delivered == [0, 1, 2, 8], delivered
    return {"seqs": delivered, "files": sorted(os.listdir("/flash"))}


def device_scripts_compile():
    """boot.py and main.py run on import (machine.Pin, reset): compiled only."""
    names = []
    for name in sorted(os.listdir("/device")):
        with open("/device/" + name) as f:
            compile(f.read(), name, "exec")
        names.append(name)
    return names


def check_reading(topic, msg):
    body = json.loads(msg)
    assert isinstance(body, dict), msg
    for key in REQUIRED:
        assert key in body, "missing " + key + ": " + repr(msg)
    for key in body:
        assert key in FIELDS, "unknown field " + key + ": " + repr(msg)
    assert body["v"] == 1 and topic.split("/")[2] == body["device_id"], repr(msg)
    assert isinstance(body["seq"], int) and body["seq"] >= 0, repr(msg)
    for key in ("ax", "ay", "az"):
        assert isinstance(body[key], float), repr(msg)
    magnitude = (body["ax"] ** 2 + body["ay"] ** 2 + body["az"] ** 2) ** 0.5
    assert 0.9 < magnitude < 1.1, repr(msg)
    if "ts" in body:
        assert isinstance(body["ts"], int) and body["ts"] > 1700000000, repr(msg)
    if "battery" in body:
        assert isinstance(body["battery"], int) and 0 <= body["battery"] <= 100, repr(msg)
    if "epoch" in body:
        assert isinstance(body["epoch"], int) and body["epoch"] > 0, repr(msg)


def lose_a_reading():
    """Sabotage: the buffer forgets the fifth reading without counting it as dropped."""
    append = OfflineBuffer.append
    calls = [0]

    def forgetful(self, item):
        calls[0] += 1
        if calls[0] == 5:
            return False
        return append(self, item)

    OfflineBuffer.append = forgetful


def main():
    if "--lose-a-reading" in sys.argv:
        lose_a_reading()
    summary = {
        "implementation": sys.implementation.name,
        "version": list(sys.implementation.version[:3]),
        "scenarios": {
            "away_and_back": away_and_back(),
            "reboot_mid_block": reboot_mid_block(),
            "reflash": reflash(),
            "full_buffer": full_buffer(),
            "board_flash": board_flash(),
        },
        "device_scripts": device_scripts_compile(),
    }
    readings = []
    for broker in BROKERS:
        for topic, msg in broker.acked:
            if topic.endswith("/tilt"):
                check_reading(topic, msg)
                readings.append([topic, msg.decode()])
            else:
                assert msg in (STATUS_ONLINE, STATUS_OFFLINE), repr(msg)
    summary["readings"] = readings
    print(json.dumps(summary))


main()
