"""Mainstay billing ledger: double-entry spend with holds, budgets and reports."""
