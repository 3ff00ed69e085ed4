"""edgeready: conformance and acceptance gates for compact LLMs on phones and edge servers."""

__version__ = "0.1.0"
