"""The control plane's data layer: models, engine and transactions, status transitions,
repositories and migrations. Services in `functions/` import from the submodules directly;
this package imports nothing on its own, to keep cold starts cheap. See docs/data.md.
"""
