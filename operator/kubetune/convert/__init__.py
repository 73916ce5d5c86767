"""Converters from other tools' experiment formats to `HPOExperiment` (`kubetune convert`)."""
