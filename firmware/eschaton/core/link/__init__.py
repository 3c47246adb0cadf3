"""Sans-IO link layer: node identity, the Noise link state machine, signed discovery beacons."""
