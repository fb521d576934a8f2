"""The learning tests share the clustering tests' fleet of real photos."""

from tests.server.clustering.conftest import fleet

__all__ = ["fleet"]
