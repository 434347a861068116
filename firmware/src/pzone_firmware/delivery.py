"""What lets readings survive outages and reboots: the offline buffer, sequence numbers that never repeat, and
the reconnect backoff.

Copied to the board: MicroPython rules as in :mod:`pzone_firmware.app`.
"""

from pzone_firmware.hal import urandom_float


class OfflineBuffer:
    """Fixed-capacity FIFO (a ring over a preallocated list: no deque(maxlen) on MicroPython).

    When full, appending drops the oldest item: fresh readings matter more than old ones.
    """

    def __init__(self, capacity: int):
        if capacity < 1:
            raise ValueError("capacity must be >= 1")
        self.capacity = capacity
        self._items = [None] * capacity  # type: list
        self._head = 0
        self._count = 0
        self.dropped = 0

    def __len__(self) -> int:
        return self._count

    def append(self, item) -> bool:
        """Add at the tail; True when the oldest item had to be dropped to make room."""
        dropped = False
        if self._count == self.capacity:
            self._items[self._head] = None
            self._head = (self._head + 1) % self.capacity
            self._count -= 1
            self.dropped += 1
            dropped = True
        self._items[(self._head + self._count) % self.capacity] = item
        self._count += 1
        return dropped

    def peek(self):
        if self._count == 0:
            raise IndexError("buffer is empty")
        return self._items[self._head]

    def pop(self):
        item = self.peek()
        self._items[self._head] = None
        self._head = (self._head + 1) % self.capacity
        self._count -= 1
        return item

    def items(self) -> list:
        return [self._items[(self._head + i) % self.capacity] for i in range(self._count)]


class SequenceLease:
    """Per-device sequence numbers that never repeat across reboots, with one flash write per ``block`` numbers.

    The storage holds an upper bound: every number handed out so far is below it. Before handing out the
    bound itself, a new bound (+block) is written first; after a reboot counting restarts at the stored bound,
    so the unused rest of the last block becomes a gap (allowed) and no number is ever reused.

    Two slot files are written alternately and the larger valid bound wins, so a write torn by a power cut
    leaves the previous bound, which still covers every number issued (none were issued from the new block).

    When no valid bound is stored (a new or reflashed board, a wiped file system) counting starts at 0 again, so
    the lease draws a new random ``epoch`` first and stores it before the first bound: the server keys readings
    by (device, epoch, seq) and starts the new epoch instead of dropping its numbers as replays of the old ones.
    Storage that holds a bound but no epoch was written by firmware without epochs: epoch 0, its numbering goes on.
    """

    SLOTS = ("seq.a", "seq.b")
    EPOCH_FILE = "epoch"
    EPOCH_MAX = 0x3FFFFFFF  # a small int on every MicroPython port (no long-int allocation)

    def __init__(self, storage, block: int = 1000, rand=None):
        if block < 1:
            raise ValueError("block must be >= 1")
        self._storage = storage
        self.block = block
        self.writes = 0
        bound, slot = self._load()
        self.bound = bound
        self._next = bound
        self._slot = slot
        if slot < 0:
            # nothing was ever numbered on this storage: a new epoch, stored before any number is handed out
            self.epoch = 1 + int((rand() if rand is not None else urandom_float()) * (self.EPOCH_MAX - 1))
            self._write_pair(self.EPOCH_FILE, self.epoch)
            self._slot = 1  # so the first bound goes to slot 0
        else:
            epoch = self._read_slot(self.EPOCH_FILE)
            self.epoch = epoch if epoch is not None else 0

    def _read_slot(self, name: str):
        try:
            raw = self._storage.read(name)
        except OSError:
            return None
        if raw is None:
            return None
        try:
            parts = raw.decode().split()
            if len(parts) == 2 and parts[0] == parts[1]:
                value = int(parts[0])
                if value >= 0:
                    return value
        except ValueError:  # UnicodeError is a ValueError on both CPython and MicroPython
            pass
        return None  # torn or garbage: ignore this slot

    def _write_pair(self, name: str, value: int) -> None:
        # the duplicated number lets a reader tell a complete write from a torn one
        self._storage.write(name, ("%d %d\n" % (value, value)).encode())
        self.writes += 1

    def _load(self):
        """The stored bound and its slot; slot -1 when no slot holds a valid bound."""
        best, best_slot = 0, -1
        for i in range(len(self.SLOTS)):
            value = self._read_slot(self.SLOTS[i])
            if value is not None and value >= best:
                best, best_slot = value, i
        return best, best_slot

    @property
    def next_seq(self) -> int:
        return self._next

    def next(self) -> int:
        """The next number; raises OSError (and hands out nothing) when the new bound cannot be stored."""
        if self._next >= self.bound:
            new_bound = self._next + self.block
            slot = 1 - self._slot
            self._write_pair(self.SLOTS[slot], new_bound)
            self._slot = slot
            self.bound = new_bound
        value = self._next
        self._next = value + 1
        return value


class Backoff:
    """Exponential reconnect delay with 'equal jitter' (half fixed, half random) so a fleet that lost its
    broker together does not reconnect in lockstep. The ceiling doubles per failure up to ``cap_ms``."""

    def __init__(self, base_ms: int, cap_ms: int, rand):
        self.base_ms = base_ms
        self.cap_ms = cap_ms
        self._rand = rand
        self.failures = 0
        self.last_ceiling_ms = 0
        self.last_delay_ms = 0

    def ceiling(self, failures: int) -> int:
        value = self.base_ms
        for _ in range(failures):
            value *= 2
            if value >= self.cap_ms:
                return self.cap_ms
        return min(value, self.cap_ms)

    def failure(self) -> int:
        """Record one failed attempt; returns how long to wait (ms) before the next."""
        ceiling = self.ceiling(self.failures)
        self.failures += 1
        half = ceiling // 2
        delay = half + int(self._rand() * (ceiling - half))
        self.last_ceiling_ms = ceiling
        self.last_delay_ms = delay
        return delay

    def reset(self) -> None:
        self.failures = 0
