"""The image track: config, prepare, streams, train, evaluate, metrics, schemas, report."""
