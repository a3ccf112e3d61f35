"""Test support: helpers the tests import (`support.data`, `support.processes`);
`conftest.py` only wires fixtures."""
