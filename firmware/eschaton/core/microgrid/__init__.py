"""Microgrid trading, sans-IO: tariffs, signed offers and invoices, seller and buyer cores,
ledger entries and loss detection. Adapters live in ``eschaton.microgrid``."""
