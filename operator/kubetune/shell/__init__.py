"""What the two shells (local runner, operator) share; see core.py."""
