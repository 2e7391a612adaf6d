"""Results and verdicts: the claims ledger, verdict rules, result rendering."""
