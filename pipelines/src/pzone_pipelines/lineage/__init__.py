"""`pzone lineage`: what a model was made of, and what became of a photo — told from the records alone.

* ``pzone lineage model REF`` — the dataset a model trained on (digest, photos, class counts, label sources, the time
  range of the photos' ``taken_at``), the label params, the code commit and the prepare/train params, with the
  version's aliases and test macro-F1. REF is ``pzone-tilt@champion`` (an alias), ``pzone-tilt/3`` (a version: the
  spelling the model tier writes into every prediction) or an MLflow run id.
* ``pzone lineage photo PHOTO_ID`` — the registered versions whose dataset held the photo (and in which split:
  ``train`` is "trained on"; ``val`` and ``test`` only measured it) and the versions that answered it on the platform.

The model side is the training run's lineage record (:mod:`pzone_pipelines.dataset_record`) in MLflow; the photo's
``taken_at`` and the predictions are the platform's database, read only (:mod:`pzone.db.readonly`). Without a
reachable platform both commands still answer from MLflow and say what is unknown.

Modules: :mod:`~pzone_pipelines.lineage.record` (references, the registry, the run's record),
:mod:`~pzone_pipelines.lineage.platform` (the database), :mod:`~pzone_pipelines.lineage.describe` (the reports,
pure), :mod:`~pzone_pipelines.lineage.command` (the typer group).
"""
