"""The Kubernetes shell around the engine: kopf handlers, pods, storage in custom resources."""
