"""SPV verification without I/O: proof of work and difficulty per network (``pow``), merkle
proofs (``merkle``), and a header chain that follows forks by work (``headers``)."""
