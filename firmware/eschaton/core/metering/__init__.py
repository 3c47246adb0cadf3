"""Sans-IO metering core: journal record format and group commit, totals and rates, safety rules."""
