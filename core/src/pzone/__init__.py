"""P-ZONE shared core: settings, database schema, telemetry contract, object store and the ``pzone`` CLI."""

__version__ = "0.1.0"
