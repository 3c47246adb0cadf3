"""The emulated village behind ``eschaton demo`` (``make demo``): scenario, processes, view."""
