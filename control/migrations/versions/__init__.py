"""One module per schema revision, applied in order by :func:`control.db.migrate`."""
