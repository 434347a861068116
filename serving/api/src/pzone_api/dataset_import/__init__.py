"""`pzone dataset import DIR`: a team's own photos into the platform, through the same checks as uploads.

* :mod:`.manifest` — the labels CSV parsed and matched with the folder (pure: rows to import, rows refused);
* :mod:`.importer` — each file through the API's intake in this process, as an operator's photo, its CSV label an
  operator's label and its CSV taken-at the operator's; the sensor labels of the rest refreshed at the end;
* :mod:`.command` — the command: options, the platform from the settings, the report, the exit code.

Nothing is imported from here at the package level: ``pzone --help`` loads the command without the intake.
"""
