"""The distributed database: a Kademlia-style DHT of verified records (sans-IO).

``ids`` (node ids bound to keys, XOR metric), ``routing`` (k-buckets), ``lookup`` (the iterative
lookup state machine), ``storage`` (bounded records, expiry, republish, rate limits), ``node``
(one node's request handling), record kinds in ``records``/``statements``/``smt``/``txproof``,
queries in ``query``/``sumtree``, and ``sim`` (the deterministic simulator). See docs/dht.md.
"""
