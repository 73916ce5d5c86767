"""kubetune: hyperparameter optimization on Kubernetes and on your laptop."""

__version__ = "0.1.0"
