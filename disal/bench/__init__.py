"""The active-learning simulator: `python -m disal.bench --help`."""
