"""Test support for Mainstay services: a pytest plugin with the embedded stack."""
