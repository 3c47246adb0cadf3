from tests.integration.node.conftest import cluster

__all__ = ["cluster"]
