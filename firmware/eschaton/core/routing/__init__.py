"""Sans-IO multi-hop payments: the onion, payment requests, forwarding, the routing graph."""
