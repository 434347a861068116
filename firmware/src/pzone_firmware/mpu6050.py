"""Minimal MPU6050 accelerometer driver over a machine.I2C-like bus (readfrom_mem / writeto_mem).

MicroPython-compatible; under CPython it runs against a fake bus in the tests.
"""

import struct

ADDRESS = 0x68  # AD0 low; 0x69 with AD0 high
REG_CONFIG = 0x1A
REG_ACCEL_CONFIG = 0x1C
REG_ACCEL_XOUT_H = 0x3B
REG_PWR_MGMT_1 = 0x6B
REG_WHO_AM_I = 0x75

# AFS_SEL -> LSB per g (datasheet, section 4.17)
_RANGES = {2: (0, 16384.0), 4: (1, 8192.0), 8: (2, 4096.0), 16: (3, 2048.0)}
# Genuine parts answer 0x68; common clones (MPU6500-based boards) answer these and read the same registers.
KNOWN_IDS = (0x68, 0x70, 0x71, 0x72, 0x73, 0x98)


class MPU6050:
    def __init__(self, i2c, address: int = ADDRESS, range_g: int = 2, dlpf: int = 3):
        if range_g not in _RANGES:
            raise ValueError("range_g must be 2, 4, 8 or 16")
        self.i2c = i2c
        self.address = address
        self.range_g = range_g
        self.dlpf = dlpf
        self.lsb_per_g = _RANGES[range_g][1]
        self.ready = False

    def init(self) -> None:
        """Wake the chip (it powers up asleep), select the gyro PLL clock, set the low-pass filter and range."""
        who = self.i2c.readfrom_mem(self.address, REG_WHO_AM_I, 1)[0]
        if who not in KNOWN_IDS:
            raise OSError("no MPU6050 at 0x%02x (WHO_AM_I=0x%02x)" % (self.address, who))
        self.i2c.writeto_mem(self.address, REG_PWR_MGMT_1, b"\x01")
        # DLPF 3 = 44 Hz bandwidth: filters vibration from passing traffic without lagging a fall
        self.i2c.writeto_mem(self.address, REG_CONFIG, bytes([self.dlpf & 0x07]))
        self.i2c.writeto_mem(self.address, REG_ACCEL_CONFIG, bytes([_RANGES[self.range_g][0] << 3]))
        self.ready = True

    def read_raw(self) -> tuple:
        data = self.i2c.readfrom_mem(self.address, REG_ACCEL_XOUT_H, 6)
        return struct.unpack(">hhh", data)

    def acceleration(self) -> tuple:
        """(ax, ay, az) in g; re-initialises after a failure (a brown-out resets the chip to sleep)."""
        if not self.ready:
            self.init()
        try:
            x, y, z = self.read_raw()
        except OSError:
            self.ready = False
            raise
        scale = self.lsb_per_g
        return (x / scale, y / scale, z / scale)


def parse_orientation(spec: str) -> tuple:
    """'+x+y+z' style mounting spec -> ((index, sign), ...) giving the object's x, y, z from the chip's axes.

    For a board mounted standing on its edge, e.g. '+x-z+y' makes the chip's y axis the object's up.
    """
    if len(spec) != 6:
        raise ValueError("orientation must look like '+x+y+z', got %r" % (spec,))
    out = []
    seen = []
    for i in range(0, 6, 2):
        sign, axis = spec[i], spec[i + 1]
        if sign not in "+-" or axis not in "xyz" or axis in seen:
            raise ValueError("orientation must look like '+x+y+z', got %r" % (spec,))
        seen.append(axis)
        out.append(("xyz".index(axis), 1 if sign == "+" else -1))
    return tuple(out)


def remap(vector: tuple, orientation: tuple) -> tuple:
    return tuple(vector[index] * sign for index, sign in orientation)


class AveragingSensor:
    """The HAL sensor: averages a few samples (halves the noise for 4) and applies the mounting orientation."""

    def __init__(self, device, samples: int = 4, orientation: str = "+x+y+z", sleep_ms=None):
        self.device = device
        self.samples = max(1, samples)
        self.orientation = parse_orientation(orientation)
        self._sleep_ms = sleep_ms

    def read(self) -> tuple:
        sx = sy = sz = 0.0
        for i in range(self.samples):
            if i and self._sleep_ms is not None:
                self._sleep_ms(2)  # new data every ~1 ms at DLPF 44 Hz
            x, y, z = self.device.acceleration()
            sx += x
            sy += y
            sz += z
        n = self.samples
        return remap((sx / n, sy / n, sz / n), self.orientation)
