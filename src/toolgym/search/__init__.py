"""Search environments: a document corpus rendered from a tool-use environment's entity graph, full-text search and
paged reading tools, multi-hop questions vetted by shortcut filters, a solver and a judge, and the context sweep."""
