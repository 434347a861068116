"""P-ZONE on one machine: the local stack (:mod:`.local_stack`) behind ``pzone up`` and ``pzone demo``, the
simulators (``pzone simulate``, :mod:`.photosim`), the embedded MQTT broker and the status board.

The top floor of the house: it starts the other packages' services, so it may import them all, and nothing imports
it but tests and benchmarks. No container image installs it.
"""
