"""The ``pzone`` command line (see :mod:`pzone.cli.app`); :mod:`pzone.cli.common` is what every package's
commands share."""

from pzone.cli.app import PLUGIN_GROUP, PluginConflict, app, load_plugins, main

__all__ = ["PLUGIN_GROUP", "PluginConflict", "app", "load_plugins", "main"]
