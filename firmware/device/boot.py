# P-ZONE tilt node, runs first on every reset. Keep it tiny: a crash here locks you out of main.py.
import gc

try:
    import esp

    esp.osdebug(None)  # the ESP8266 SDK's debug chatter on UART0 confuses mpremote
except ImportError:
    pass

try:
    import network

    network.WLAN(network.AP_IF).active(False)  # the default open access point is not wanted in the field
except ImportError:
    pass

gc.collect()
