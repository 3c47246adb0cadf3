"""A bitcoind-compatible JSON-RPC: the server over the embedded chain and the ``rpc`` backend."""
