"""Reports: plots, the bigger-network verdict in Markdown, and one self-contained HTML page."""
