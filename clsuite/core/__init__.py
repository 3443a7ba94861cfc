"""Track-neutral core: errors, io, registry, tables, runtime, checkpoint, validation, the run contract, accuracy-matrix metrics and seed aggregation. Imports no track."""
