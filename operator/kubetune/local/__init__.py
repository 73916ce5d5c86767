"""Local mode: `kubetune run experiment.yaml`, trials as local processes."""
