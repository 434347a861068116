"""The ``pzone`` command line (see :mod:`pzone.cli.root`); :mod:`pzone.cli.common` is what every package's
commands share."""

from pzone.cli.root import PLUGIN_GROUP, PluginConflict, app, command_group, load_plugins, main

__all__ = ["PLUGIN_GROUP", "PluginConflict", "app", "command_group", "load_plugins", "main"]
