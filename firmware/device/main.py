# P-ZONE tilt node entry point (board root). The logic lives in /lib/pzone_firmware.
#
# Hold the FLASH button (GPIO0) while pressing RST to skip the sensor loop and stay at the REPL.
import gc
import sys
import time

import machine

RESTART_DELAY_S = 10


def safe_mode():
    return machine.Pin(0, machine.Pin.IN, machine.Pin.PULL_UP).value() == 0


def main():
    from pzone_firmware import app, hal_micropython
    from pzone_firmware.config import ConfigError, load_config

    storage = hal_micropython.FlashStorage()
    try:
        config = load_config(storage)
    except ConfigError as exc:
        # A broken config will not fix itself: stay at the REPL instead of reboot-looping.
        print("CONFIG ERROR:", exc)
        return
    hal = hal_micropython.board_hal(config, storage)
    gc.collect()
    node = app.TiltNode(config, hal, log=print)
    print("pzone: %s in %s, every %s s" % (config.device_id, config.zone_id, config.interval_s))
    # collect every cycle: the ESP8266 heap is small and fragments if garbage piles up between readings
    node.run(after_step=lambda _node: gc.collect())


if safe_mode():
    print("pzone: safe mode (FLASH held), not starting")
else:
    try:
        main()
    except KeyboardInterrupt:
        print("pzone: interrupted")
    except Exception as exc:
        # Anything unexpected (out of memory, a driver bug): log it and start clean. The sequence lease
        # guarantees the reset never reuses a sequence number.
        sys.print_exception(exc)
        time.sleep(RESTART_DELAY_S)
        machine.reset()
