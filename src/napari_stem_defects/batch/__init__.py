"""Batch analysis of many files: ``napari-stem-defects batch``, the Batch dock, and dask.distributed clusters.

:func:`~napari_stem_defects.batch.runner.run_batch` (in :mod:`.runner`) runs
:func:`napari_stem_defects.analyze.analyze_image` on every file of folders,
globs and lists, in this process, in local worker processes or on a
dask.distributed cluster, writes each file's ``analyze`` results into its
own folder, and the dataset's ``dataset.csv``, ``batch.json`` and
``report.html``. A re-run with the same settings finishes only what is
missing. Nothing here imports Qt; torch and ``distributed`` are imported only
when used.
"""
